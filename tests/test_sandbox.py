"""The code sandbox: outcomes, limits, and containment of hostile programs.

Attacks run under three configurations: everything on (the real setting), the audit hook
alone (hosts without namespaces or Landlock), and the kernel layers alone (the hook is
bypassable by determined code, so the OS layers must hold on their own).
"""

import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from ftpipe.evaluation import sandbox
from ftpipe.evaluation.sandbox import SandboxResult, run_many, run_python

KERNEL_LAYERS = bool(sandbox.host_capabilities().namespaces or sandbox.host_capabilities().landlock_abi)

CONFIGS = {
    "all": {},
    "audit_only": {"kernel_layers": False},
    "kernel_only": {"audit_hook": False},
}


@pytest.fixture(params=list(CONFIGS))
def run(request):
    """A runner for one layer configuration: program -> (result, expect_blocked)."""
    if request.param == "kernel_only" and not KERNEL_LAYERS:
        pytest.skip("neither user namespaces nor Landlock are available on this host")

    def _run(program: str, **kw) -> tuple[SandboxResult, bool]:
        result = sandbox.run_python(program, timeout_s=5, **CONFIGS[request.param], **kw)
        # Without the hook the OS refuses instead, which the program sees as an error.
        return result, request.param != "kernel_only"

    _run.config = request.param
    return _run


def _kernel_covers(what: str) -> bool:
    """Whether this host's kernel layers stop a kind of attack without the audit hook."""
    abi, namespaces = sandbox.host_capabilities().landlock_abi, sandbox.host_capabilities().namespaces
    seccomp = bool(sandbox.host_capabilities().seccomp)
    return {
        "files": abi >= 3,  # ABI 3 adds truncate
        "reads": abi >= 1,
        "exec": abi >= 1,
        "tcp": abi >= 4 or namespaces or seccomp,
        "udp": namespaces or seccomp,
        "unix": seccomp,
        "signals": abi >= 6 or namespaces,
        "nproc": bool(sandbox.host_capabilities().max_tasks),
        "pidns": namespaces,
        "bind": abi >= 4,
        "uid": sandbox.host_capabilities().own_uid,
        "output": True,
    }[what]


def _needs(run, what: str) -> None:
    if run.config == "kernel_only" and not _kernel_covers(what):
        pytest.skip(f"this host's kernel layers do not cover {what}")


def _assert_contained(result: SandboxResult, expect_blocked: bool) -> None:
    assert not result.passed
    if expect_blocked:
        assert result.status == "blocked", result
        assert "ftpipe-sandbox: blocked" in result.detail
    else:
        assert result.status in ("failed", "blocked"), result


@pytest.fixture
def workdirs(monkeypatch):
    """Records the work folders the sandbox creates, to look for leftover processes."""
    made = []
    real_mkdtemp = sandbox.tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sandbox.tempfile, "mkdtemp", mkdtemp)
    return made


def _processes_using(folders: list[str], grace_s: float = 1.0) -> list[int]:
    """Pids of processes whose command line names one of the folders, after a short grace.

    The grace covers the kernel tearing down a process that was already sent SIGKILL (it
    runs no more user code, but can stay visible for a few milliseconds).
    """
    deadline = time.monotonic() + grace_s
    while True:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if any(os.fsencode(folder) in cmdline for folder in folders):
                    pids.append(int(entry.name))
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


# ---------------------------------------------------------------- ordinary outcomes


def test_correct_program_passes():
    program = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n"
    assert run_python(program) == SandboxResult(True, "passed", "")


def test_failing_assert_fails():
    result = run_python("def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5\n")
    assert (result.passed, result.status) == (False, "failed")
    assert "AssertionError" in result.detail
    assert "program.py" in result.detail


def test_syntax_error_fails():
    result = run_python("def add(a, b:\n    return a\n")
    assert (result.passed, result.status) == (False, "failed")
    assert "SyntaxError" in result.detail


@pytest.mark.parametrize(
    "exit_call", ["import sys; sys.exit(0)", "exit()", "import os; os._exit(0)"]
)
def test_exiting_early_with_status_zero_does_not_pass(exit_call):
    # Generated code that exits before the tests below it run must not count as a pass.
    result = run_python(f"{exit_call}\nassert False, 'tests never ran'\n")
    assert (result.passed, result.status) == (False, "failed")


def test_main_guard_does_not_run():
    # As in the HumanEval harness: demo code under the guard (here, reading stdin) is skipped.
    assert run_python("if __name__ == '__main__':\n    input()\nassert 1 + 1 == 2\n").passed


def test_standard_library_and_temp_files_work():
    program = (
        "import collections, json, math, re, tempfile, threading\n"
        "with tempfile.NamedTemporaryFile('w') as f:\n    f.write('inside the work folder')\n"
        "open('notes.txt', 'w').write('x')\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "assert math.gcd(12, 18) == 6\n"
    )
    assert run_python(program).status == "passed"


def test_input_sees_end_of_file():
    result = run_python("input()\n")
    assert result.status == "failed" and "EOFError" in result.detail


# ---------------------------------------------------------------- resource limits


def test_infinite_loop_times_out_and_is_killed(workdirs):
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout_s=1.5)
    elapsed = time.monotonic() - start
    assert (result.passed, result.status) == (False, "timeout")
    assert elapsed < 1.5 + 2
    assert workdirs and _processes_using(workdirs) == []


def test_timeout_also_ends_threads_and_sleeps(workdirs):
    program = (
        "import threading, time\n"
        "threading.Thread(target=lambda: time.sleep(60)).start()\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    assert run_python(program, timeout_s=1).status == "timeout"
    assert time.monotonic() - start < 3
    assert workdirs and _processes_using(workdirs) == []


@pytest.mark.parametrize(
    "program",
    [
        "x = bytearray(10**10)\n",
        "x = []\nwhile True:\n    x.append(' ' * 10**6)\n",
    ],
    ids=["one-huge-allocation", "growing-list"],
)
def test_memory_bomb_is_reported_as_memory(program):
    result = run_python(program, memory_mb=256, timeout_s=10)
    assert (result.passed, result.status) == (False, "memory")


def test_huge_output_is_capped():
    result = run_python("while True:\n    print('x' * 10**6)\n", timeout_s=10)
    assert result.status == "failed"
    assert "output limit" in result.detail


# ---------------------------------------------------------------- containment


def test_write_outside_folder_is_stopped(run, tmp_path):
    _needs(run, "files")
    target = tmp_path / "escaped.txt"
    result, blocked = run(f"open({str(target)!r}, 'w').write('pwned')\n")
    _assert_contained(result, blocked)
    assert not target.exists()


def test_relative_path_escape_is_stopped(run, tmp_path):
    _needs(run, "files")
    target = tmp_path / "escaped.txt"
    climb = "../" * 30 + str(target).lstrip("/")
    result, blocked = run(f"open({climb!r}, 'w').write('pwned')\n")
    _assert_contained(result, blocked)
    assert not target.exists()


@pytest.mark.parametrize(
    "action",
    [
        "import os\nos.remove(VICTIM)",
        "import os\nos.rename(VICTIM, 'moved.txt')",
        "import shutil\nshutil.rmtree(os.path.dirname(VICTIM))",
        "import os\nos.truncate(VICTIM, 0)",
        "import os\nos.chmod(VICTIM, 0o777)",
        "import os\nos.utime(VICTIM, (0, 0))",
        # A directory handle plus a relative name, which the hook could not see in os.open.
        "import os\nfd = os.open(os.path.dirname(VICTIM), os.O_RDONLY)\n"
        "os.open('created.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
        "import os\nos.symlink(VICTIM, 'link')\nopen('link', 'w').write('pwned')",
        "import sqlite3\ndb = os.path.join(os.path.dirname(VICTIM), 'x.db')\n"
        "sqlite3.connect(db).execute('create table t(a)')",
    ],
    ids=["remove", "rename", "rmtree", "truncate", "chmod", "utime", "dir-fd", "symlink",
         "sqlite"],
)
def test_existing_outside_files_are_untouched(run, tmp_path, action):
    _needs(run, "files")
    if run.config == "kernel_only" and "chmod" in action and not sandbox.host_capabilities().seccomp:
        # Landlock has no right for metadata changes, and the item keeps root's file access;
        # only the seccomp filter refuses them.
        pytest.xfail("known gap: without the hook and seccomp, chmod/utime of root's files")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    victim.chmod(0o600)
    mtime = victim.stat().st_mtime
    result, blocked = run(f"import os\nVICTIM = {str(victim)!r}\n{action}\n")
    _assert_contained(result, blocked)
    assert victim.read_text() == "precious"
    assert victim.stat().st_mode & 0o777 == 0o600
    assert victim.stat().st_mtime == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]


def test_network_connect_is_stopped(run):
    _needs(run, "tcp")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        program = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'hi')\n"
        )
        result, blocked = run(program)
        _assert_contained(result, blocked)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody ever connected


def test_udp_send_is_stopped(run):
    _needs(run, "udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        result, blocked = run(
            "import socket\n"
            f"socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port}))\n"
        )
        _assert_contained(result, blocked)
        receiver.settimeout(0.2)
        with pytest.raises(TimeoutError):
            receiver.recv(10)


@pytest.mark.parametrize("target", ["os.getppid()", "EVALUATOR"])
def test_killing_the_evaluator_is_contained(run, target):
    _needs(run, "signals")
    program = f"import os, signal\nEVALUATOR = {os.getpid()}\nos.kill({target}, signal.SIGKILL)\n"
    result, blocked = run(program)
    # Reaching this line means the evaluator survived; now check what the item reported.
    if blocked:
        assert (result.passed, result.status) == (False, "blocked")
    elif target == "EVALUATOR" or not sandbox.host_capabilities().namespaces:
        assert (result.passed, result.status) == (False, "failed")  # EPERM or ESRCH
    # else: in a PID namespace getppid() is 0 and kill(0) only reaches the item's own group.


def test_killing_the_evaluator_process_group_is_contained(run):
    _needs(run, "signals")
    program = f"import os, signal\nos.killpg({os.getpgid(0)}, signal.SIGKILL)\n"
    result, blocked = run(program)
    _assert_contained(result, blocked)


@pytest.mark.parametrize(
    "spawn",
    [
        "import os\nos.system('touch ' + TARGET)",
        "import subprocess\nsubprocess.run(['touch', TARGET])",
        "import os\nos.execv('/usr/bin/touch', ['touch', TARGET])",
        "import os\nos.posix_spawn('/usr/bin/touch', ['touch', TARGET], {})\nos.wait()",
        "import os\nif os.fork() == 0:\n    open(TARGET, 'w')\n    os._exit(0)\nos.wait()",
    ],
    ids=["os.system", "subprocess", "exec", "posix_spawn", "fork"],
)
def test_starting_processes_is_stopped(run, tmp_path, spawn):
    _needs(run, "files")
    target = tmp_path / "spawned.txt"
    result, blocked = run(f"TARGET = {str(target)!r}\n{spawn}\nimport time; time.sleep(0.2)\n")
    if blocked:
        _assert_contained(result, blocked)
    # Without the hook a child process may start, but it inherits the kernel layers.
    assert not target.exists()


@pytest.mark.parametrize(
    "program",
    [
        "import ctypes\nctypes.CDLL(None).kill(1, 9)",
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
        "import _posixsubprocess\n_posixsubprocess.fork_exec(['touch', '/tmp/x'])",
        "import sys\ndel sys.modules['_posixsubprocess']\nimport _posixsubprocess",
        "import _xxsubinterpreters",
    ],
    ids=["ctypes", "raise-rlimit", "fork_exec", "reimport-fork_exec", "subinterpreter"],
)
def test_escape_hatches_are_blocked(program):
    result = run_python(program + "\n")
    assert (result.passed, result.status) == (False, "blocked")


# ---------------------------------------------------------------- run_many, layers


def test_run_many_keeps_order_and_isolates_items():
    programs = [
        "assert True\n",
        "assert False\n",
        "while True:\n    pass\n",
        "open('/etc/ftpipe-sandbox-test', 'w')\n",
        "assert sum(range(10)) == 45\n",
    ]
    results = run_many(programs, workers=3, timeout_s=1.5)
    assert [r.status for r in results] == ["passed", "failed", "timeout", "blocked", "passed"]
    assert not os.path.exists("/etc/ftpipe-sandbox-test")


def test_isolation_layers_are_reported():
    layers = sandbox.isolation_layers()
    assert layers[:2] == ("process", "rlimits") and layers[-1] == "audit-hook"
    assert ("namespaces" in layers) == sandbox.host_capabilities().namespaces
    assert any(layer.startswith("landlock") for layer in layers) == bool(sandbox.host_capabilities().landlock_abi)


def test_work_folder_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(tmp_path))
    assert run_python("open('scratch.txt', 'w').write('x')\n").passed
    assert list(tmp_path.iterdir()) == []



def test_detached_children_die_with_the_item(workdirs):
    if not sandbox.host_capabilities().namespaces:
        pytest.skip("needs the PID namespace")
    # With the hook off, a forked child that starts its own session escapes a process-group
    # kill; the PID namespace still ends it when the item ends.
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
        "time.sleep(0.3)\n"
    )
    result = sandbox.run_python(program, timeout_s=5, audit_hook=False)
    assert result.status == "passed"
    assert workdirs and _processes_using(workdirs) == []


def test_item_has_no_capabilities_and_no_new_privileges():
    program = (
        "lines = open('/proc/self/status').read().splitlines()\n"
        "status = dict(line.split(':\\t', 1) for line in lines)\n"
        "assert status['CapEff'].strip() == '0' * 16, status['CapEff']\n"
        "assert status['CapPrm'].strip() == '0' * 16, status['CapPrm']\n"
        "assert status['NoNewPrivs'].strip() == '1'\n"
    )
    result = run_python(program)
    assert result.passed, result.detail


@pytest.mark.parametrize(
    "rc, cpu_limited, expected",
    [
        (-signal.SIGKILL, True, "timeout"),  # hard RLIMIT_CPU
        (-signal.SIGXCPU, True, "timeout"),  # soft RLIMIT_CPU
        (-signal.SIGKILL, False, "memory"),  # out-of-memory killer
        (-signal.SIGSEGV, False, "failed"),
        (0, False, "failed"),  # exit 0 without the completion token
    ],
)
def test_classify_signals(rc, cpu_limited, expected):
    result = sandbox.classify_ending(rc, False, cpu_limited, False, "", 1.0)
    assert (result.passed, result.status) == (False, expected)


# ---------------------------------------------------------------- hostile-program corpus
#
# Each program tries one attack and reaches its end only if the attack worked. Every one
# runs twice: with every layer on (the real setting), and with the audit hook off, as if
# the program had got past it; the kernel layers must then hold on their own. The program
# sees the bait through these names (paths and ids only, never the secrets themselves):
# HOME, SECRET (a token file under HOME), REAL_HOME, EVALUATOR (our pid), TCP_PORT,
# UDP_PORT, UNIX_SOCKET, TARGET (a path outside the work folder that must never appear).


@dataclass(frozen=True)
class Hostile:
    program: str
    needs: tuple[str, ...] = ()  # what the kernel must cover to hold without the hook
    with_hook: str = "blocked"  # expected status with every layer on
    without_hook: str = "failed"  # expected status with the hook off
    timeout_s: float = 5


_UNHOOK = (
    # Make the hook's path resolution say every path is inside the work folder.
    "import os, posixpath\n"
    "posixpath._joinrealpath = lambda path, rest, strict, seen: (os.getcwd() + '/x', True)\n"
)
_LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
_GIGABYTE = "for _ in range(1024):\n    {write}\n"

HOSTILE = {
    # Reading what the evaluator's user can read.
    "read-token": Hostile("import sys\nsys.stderr.write(open(SECRET).read())\n", ("reads",)),
    "read-ssh-key": Hostile(
        "import sys\nsys.stderr.write(open(HOME + '/.ssh/id_ed25519').read())\n", ("reads",)
    ),
    "list-home": Hostile("import os, sys\nsys.stderr.write(repr(os.listdir(HOME)))\n", ("reads",)),
    "list-real-home": Hostile(
        "import os, sys\nsys.stderr.write(repr(os.listdir(REAL_HOME)))\n", ("reads",)
    ),
    "read-via-proc-root": Hostile(
        "import sys\nsys.stderr.write(open('/proc/self/root' + SECRET).read())\n", ("reads",)
    ),
    "symlink-to-secret": Hostile(
        "import os, sys\nos.symlink(SECRET, 'link')\nsys.stderr.write(open('link').read())\n",
        ("reads",),
    ),
    "hardlink-secret": Hostile(
        "import os, sys\nos.link(SECRET, 'copy')\nsys.stderr.write(open('copy').read())\n",
        ("reads",),
    ),
    "evaluator-environ": Hostile(
        "import sys\nsys.stderr.write(open('/proc/%d/environ' % EVALUATOR).read())\n", ("reads",)
    ),
    # Getting past the audit hook: the kernel layers refuse instead.
    "unhooked-read": Hostile(
        _UNHOOK + "import sys\nsys.stderr.write(open(SECRET).read())\n", ("reads",), "failed"
    ),
    "unhooked-write": Hostile(
        _UNHOOK + "open(TARGET, 'w').write('escaped')\n", ("files",), "failed"
    ),
    "del-sys-modules": Hostile(
        "import sys\n"
        "for name in ['os', 'posixpath', 'os.path', 'subprocess', '_posixsubprocess']:\n"
        "    sys.modules.pop(name, None)\n"
        "import subprocess\n"
        "subprocess.run(['/bin/sh', '-c', 'touch ' + TARGET], check=True)\n",
        ("exec",),
    ),
    # Processes.
    "fork-bomb": Hostile(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        ("nproc", "pidns"), without_hook="timeout", timeout_s=2,
    ),
    "thread-bomb": Hostile(
        "import threading, time\nwhile True:\n"
        "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n",
        ("nproc",), "failed",
    ),
    "detached-child": Hostile(
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30)\n"
        "    os._exit(0)\n"
        "os._exit(0)  # leave the grandchild behind\n",
        ("pidns",),
    ),
    # Output.
    "stdout-1gb": Hostile(
        "import os\nchunk = b'x' * 2**20\n" + _GIGABYTE.format(write="os.write(1, chunk)"),
        ("output",), "failed",
    ),
    "print-1gb": Hostile(
        "chunk = 'x' * 2**20\n" + _GIGABYTE.format(write="print(chunk)"), ("output",), "failed"
    ),
    "stderr-1gb": Hostile(
        "import sys\nchunk = 'y' * 2**20\n" + _GIGABYTE.format(write="sys.stderr.write(chunk)"),
        ("output",), "failed",
    ),
    "file-1gb": Hostile(
        "chunk = b'x' * 2**20\nwith open('big.bin', 'wb') as f:\n"
        "    for _ in range(1024):\n        f.write(chunk)\n",
        ("output",), "failed",
    ),
    # Network.
    "tcp-connect": Hostile(
        "import socket\n"
        "socket.create_connection(('127.0.0.1', TCP_PORT), timeout=2).sendall(b'x')\n",
        ("tcp",),
    ),
    "tcp-listen": Hostile(
        "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n", ("bind",)
    ),
    "udp-send": Hostile(
        "import socket\n"
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', UDP_PORT))\n",
        ("udp",),
    ),
    "unix-socket": Hostile(
        "import socket\ns = socket.socket(socket.AF_UNIX)\n"
        "s.connect(UNIX_SOCKET)\ns.sendall(b'x')\n",
        ("unix",),
    ),
    "dns-lookup": Hostile("import socket\nsocket.getaddrinfo('example.com', 443)\n", ("udp",)),
    # Signals.
    "kill-parent": Hostile(
        "import os, signal\n"
        "os.kill(os.getppid(), signal.SIGKILL)\nos.kill(EVALUATOR, signal.SIGKILL)\n",
        ("signals",),
    ),
    "kill-everything": Hostile("import os, signal\nos.kill(-1, signal.SIGKILL)\n", ("signals",)),
    # ctypes: the C library directly.
    "ctypes-kill": Hostile(_LIBC + "assert libc.kill(EVALUATOR, 9) == 0\n", ("signals",)),
    "ctypes-ptrace": Hostile(
        _LIBC + "assert libc.ptrace(16, EVALUATOR, 0, 0) == 0  # PTRACE_ATTACH\n", ("signals",)
    ),
    "ctypes-system": Hostile(
        _LIBC + "assert libc.system(('touch ' + TARGET).encode()) == 0\n", ("exec",)
    ),
    "ctypes-unshare": Hostile(
        _LIBC + "assert libc.unshare(0x10000000 | 0x00020000) == 0  # new user+mount namespace\n"
        "import sys\nsys.stderr.write(open(SECRET).read())\n",
        ("reads",),
    ),
    "ctypes-regain-privileges": Hostile(
        _LIBC + "assert libc.prctl(38, 0, 0, 0, 0) == 0, 'no_new_privs stays'\n"
        "data = (ctypes.c_uint32 * 6)(*[0xFFFFFFFF] * 6)\n"
        "assert libc.capset((ctypes.c_uint32 * 2)(0x20080522, 0), data) == 0, 'capset'\n",
    ),
    "setuid-root": Hostile(
        "import os\nos.setresuid(0, 0, 0)\nassert os.getuid() == 0\n", ("uid",), "failed"
    ),
    "raise-nproc": Hostile(
        "import resource\nresource.setrlimit(resource.RLIMIT_NPROC, (10**6, 10**6))\n"
    ),
}


@pytest.fixture
def bait(tmp_path):
    """A fake home with secrets, listening sockets and a target path, all outside the item."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".cache").mkdir()
    secrets_ = {
        "key": "KEY-" + secrets.token_hex(16),
        "token": "TOKEN-" + secrets.token_hex(16),
        "name": "notes-" + secrets.token_hex(8),
    }
    (home / ".ssh" / "id_ed25519").write_text(secrets_["key"])
    (home / ".cache" / "token").write_text(secrets_["token"])
    (home / (secrets_["name"] + ".txt")).write_text("x")
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "daemon.sock"))
    unix.listen()
    names = {
        "HOME": str(home),
        "SECRET": str(home / ".cache" / "token"),
        "REAL_HOME": os.path.expanduser("~"),
        "EVALUATOR": os.getpid(),
        "TCP_PORT": tcp.getsockname()[1],
        "UDP_PORT": udp.getsockname()[1],
        "UNIX_SOCKET": str(tmp_path / "daemon.sock"),
        "TARGET": str(tmp_path / "escaped"),
    }
    preamble = "".join(f"{key} = {value!r}\n" for key, value in names.items())
    yield SimpleNamespace(preamble=preamble, secrets=secrets_, sockets=(tcp, udp, unix),
                          target=Path(names["TARGET"]), home=home)
    for s in (tcp, udp, unix):
        s.close()


def _nothing_arrived(sockets) -> bool:
    tcp, udp, unix = sockets
    for s in sockets:
        s.setblocking(False)
    for listener in (tcp, unix):
        try:
            listener.accept()
            return False
        except BlockingIOError:
            pass
    try:
        udp.recv(10)
        return False
    except BlockingIOError:
        return True


def _children_left(grace_s: float = 1.0) -> list[psutil.Process]:
    """Processes descended from this test process, after a short grace for teardown."""
    deadline = time.monotonic() + grace_s
    while True:
        children = [c for c in psutil.Process().children(recursive=True) if c.is_running()
                    and c.status() != psutil.STATUS_ZOMBIE]
        if not children or time.monotonic() > deadline:
            return children
        time.sleep(0.05)


def _real_home_names() -> list[str]:
    try:
        return os.listdir(os.path.expanduser("~"))
    except OSError:
        return []


@pytest.mark.parametrize("hooked", [True, False], ids=["all-layers", "hook-bypassed"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_is_contained(name, hooked, bait, workdirs):
    case = HOSTILE[name]
    if not hooked:
        missing = [need for need in case.needs if not _kernel_covers(need)]
        if missing:
            pytest.skip(f"this host's kernel layers do not cover {missing}")
    start = time.monotonic()
    result = sandbox.run_python(bait.preamble + case.program, timeout_s=case.timeout_s,
                          audit_hook=hooked)
    elapsed = time.monotonic() - start

    assert not result.passed, result
    assert result.status == (case.with_hook if hooked else case.without_hook), result
    assert elapsed < case.timeout_s + 3
    # Nothing read, nothing sent, nothing written, nothing left running.
    for secret in bait.secrets.values():
        assert secret not in result.detail
    assert not any(f"'{n}'" in result.detail for n in _real_home_names()), result.detail
    assert "PATH=" not in result.detail
    assert len(result.detail) < sandbox.DETAIL_CHARS + 200
    assert _nothing_arrived(bait.sockets)
    assert not bait.target.exists()
    assert (bait.home / ".cache" / "token").read_text() == bait.secrets["token"]
    assert _children_left() == []
    assert workdirs and _processes_using(workdirs) == []
    # The grader is still here and still scores a normal program.
    assert run_python("assert sorted([3, 1, 2]) == [1, 2, 3]\n").passed


@pytest.mark.parametrize("hooked", [True, False], ids=["all-layers", "hook-bypassed"])
@pytest.mark.xfail(strict=True, reason="known gap: the program shares the runner's process, "
                   "so it can read the completion token from the runner's frame")
def test_forged_completion_token_does_not_pass(hooked):
    program = (
        "import os, sys\n"
        "token = sys._getframe(1).f_locals['token']\n"
        "os.write(1, b'\\n' + token)\n"
        "os._exit(0)\n"
        "assert False, 'the tests below never run'\n"
    )
    assert not sandbox.run_python(program, audit_hook=hooked).passed


def test_process_count_is_limited():
    if not _kernel_covers("nproc"):
        pytest.skip("no enforceable process limit on this host")
    program = (
        "import os, sys, time\nn = 0\n"
        "try:\n"
        "    while n < 1000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(2)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    sys.stderr.write('forked %d\\n' % n)\n"
        "    raise\n"
    )
    result = sandbox.run_python(program, timeout_s=5, audit_hook=False)
    assert result.status == "failed" and "BlockingIOError" in result.detail, result
    forked = int(result.detail.split("forked ")[1].split()[0])
    assert forked < sandbox.MAX_TASKS  # the runner itself is one of the tasks
    assert _children_left() == []


def test_a_gigabyte_of_output_keeps_the_grader_small():
    before = psutil.Process().memory_info().rss
    program = "import os\nchunk = b'x' * 2**20\n" + _GIGABYTE.format(write="os.write(1, chunk)")
    result = run_python(program)
    assert (result.passed, result.status) == (False, "failed")
    assert "output limit" in result.detail
    assert psutil.Process().memory_info().rss - before < 32 * 2**20


def test_ordinary_programs_still_work_under_read_rules():
    # What generated code commonly touches, with every layer on.
    program = (
        "import collections, datetime, decimal, fractions, hashlib, heapq, itertools, json\n"
        "import random, re, sqlite3, statistics, string, time, typing, uuid, zoneinfo, asyncio\n"
        "assert hashlib.sha256(b'x').hexdigest()[:4] == '2d71'\n"
        "assert sqlite3.connect(':memory:').execute('select 1').fetchone() == (1,)\n"
        "assert str(decimal.Decimal(1) / 4) == '0.25'\n"
        "uuid.uuid4(); random.random(); time.localtime(); datetime.datetime.now()\n"
        "zoneinfo.ZoneInfo('Europe/Paris')\n"
        "assert asyncio.run(asyncio.sleep(0, result=3)) == 3\n"
        "import os\nopen(os.devnull, 'w').write('discarded')\n"
        "assert os.urandom(4) and os.cpu_count()\n"
        "assert open('/proc/self/status').read().startswith('Name:')\n"
    )
    result = run_python(program)
    assert result.passed, result.detail


@pytest.mark.parametrize("config", list(CONFIGS))
def test_reading_a_secret_is_refused_in_every_configuration(config, bait):
    if config == "kernel_only" and not _kernel_covers("reads"):
        pytest.skip("no Landlock here: reads are guarded by the audit hook only")
    program = bait.preamble + "import sys\nsys.stderr.write(open(SECRET).read())\n"
    result = sandbox.run_python(program, timeout_s=5, **CONFIGS[config])
    assert not result.passed
    assert result.status == ("failed" if config == "kernel_only" else "blocked"), result
    assert bait.secrets["token"] not in result.detail


def test_read_guard_is_reported_honestly():
    layers = sandbox.isolation_layers()
    assert sandbox.reads_guarded() == bool(sandbox.host_capabilities().landlock_abi)
    assert ("landlock-reads" in layers) == sandbox.reads_guarded()
    assert ("nproc" in layers) == bool(sandbox.host_capabilities().max_tasks)
    assert ("seccomp" in layers) == bool(sandbox.host_capabilities().seccomp)
    assert ("own-uid" in layers) == (sandbox.host_capabilities().own_uid)


def test_outcomes_without_pidfd(monkeypatch):
    # Kernels before 5.3 have no pidfd_open; the parent then polls for the item's exit.
    def no_pidfd(pid):
        raise OSError("no pidfd_open")

    monkeypatch.setattr(sandbox.os, "pidfd_open", no_pidfd)
    assert run_python("print('hello')\nassert True\n").passed
    assert run_python("assert False\n").status == "failed"
    assert run_python("import time\ntime.sleep(5)\n", timeout_s=0.5).status == "timeout"
