"""Run untrusted generated Python (HumanEval/MBPP-style code tasks) against its tests.

Each item runs in its own short-lived process, with layered defenses because we cannot
count on containers being available:

1. **Process boundary.** A fresh ``python -I -B`` per item, in a new session (its own
   process group, no controlling terminal), with a minimal environment, stdin holding only
   a one-time token, output going to anonymous temporary files, and a throwaway working
   folder made with :mod:`tempfile` and removed afterwards. On a wall-clock timeout the
   whole process group is killed.
2. **Resource limits** set in the child before the untrusted code runs: address space
   (``memory_mb``), CPU seconds, size of any file written, no core dumps. ``RLIMIT_NPROC``
   is deliberately not used: root ignores it, and for other users it counts every thread
   of the user system-wide. Process creation is refused by the audit hook instead, and
   contained by the PID namespace.
3. **Kernel restrictions.** Always: ``no_new_privs`` and all capabilities dropped, so an
   evaluator running as root does not lend root powers to the item. Where the host offers
   them (probed once and cached): ``unshare --net --pid --fork --kill-child
   --map-root-user`` puts the item in empty network and PID namespaces (no network
   interface, no way to address outside processes, and everything it started dies with
   it); Landlock (Linux >= 5.13) confines all writes to the working folder, denies TCP
   connect/bind (ABI >= 4) and signals to processes outside the sandbox (ABI >= 6).
   These hold even against code that gets past layer 4, and they are inherited by any
   process the item manages to start.
4. **An audit hook** (:func:`sys.addaudithook`, which cannot be removed once added) that
   ends the process at once with a dedicated exit code when the code tries: network
   (connect, bind, sendto, name lookups), process creation (subprocess, os.system, exec,
   fork, posix_spawn), signals to any other process, ctypes, raising resource limits,
   sub-interpreters, or writing, creating, removing, renaming or re-permissioning any path
   outside its working folder. This layer gives a clear "blocked" status and stands alone
   on hosts without Landlock and namespaces, but it is a guard against accidents and
   careless code, not a proof against a determined attacker (Python code can monkeypatch
   modules the hook relies on); the kernel layers are the real boundary.

Known gaps: with the audit hook bypassed, (a) chmod/chown/utime of files owned by the
evaluator's own uid are not stopped (Landlock has no right for them); (b) without the
namespaces, UDP is not stopped and a process that starts its own session outlives the
item (CPU-limited by RLIMIT_CPU); (c) always, total disk use of the working folder is
bounded only per file (RLIMIT_FSIZE) and by the time limit.

Outcome mapping: exit 0 *and* the runner's completion token -> ``passed``; wall-clock
or CPU limit -> ``timeout``; ``MemoryError`` or a SIGKILL we did not send (the kernel's
out-of-memory killer) -> ``memory``; an audit-hook refusal -> ``blocked``; any other
ending -> ``failed``; the sandbox itself could not run the item -> ``error``.

The token guards against false passes: code that calls ``exit(0)`` or ``os._exit(0)``
before its tests have run does not pass. The program runs as a module named
``__sandbox__``, so ``if __name__ == "__main__":`` blocks in generated code do not run
(as in the HumanEval harness); tests must be plain top-level statements.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

STATUSES = ("passed", "failed", "timeout", "memory", "blocked", "error")

# Dedicated exit codes the runner uses to tell the parent what happened.
_EXIT_BLOCKED = 90
_EXIT_MEMORY = 91
_EXIT_SETUP = 92

_FILE_SIZE_LIMIT = 64 * 2**20  # bytes; per file the item writes, stdout/stderr included
_DETAIL_CHARS = 800
_UNSHARE_ARGS = ("--net", "--pid", "--fork", "--kill-child", "--map-root-user")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed program.

    Attributes:
        passed: True only when the program ran to its end and exited 0 within the limits.
        status: One of "passed", "failed", "timeout", "memory", "blocked", "error".
        detail: A short tail of the program's stderr (or why the sandbox failed).
    """

    passed: bool
    status: str
    detail: str = ""


# The code the child runs before (and around) the untrusted program. It is passed with
# ``-c`` because ``-I`` keeps ftpipe itself off the child's import path.
# argv: workdir, memory_mb, cpu_seconds, file_size_limit, landlock_abi, audit(0/1).
_RUNNER = r'''
import os, sys

EXIT_BLOCKED, EXIT_MEMORY, EXIT_SETUP = %(blocked)d, %(memory)d, %(setup)d


def set_limits(memory_mb, cpu_s, fsize):
    import resource, signal
    mem = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    # The hard CPU limit one second later kills code that ignores SIGXCPU.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Oversized writes then raise OSError instead of killing the process silently.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def kernel_lockdown(workdir, abi):
    """Landlock (writes only under workdir, no TCP, no signals out), then drop capabilities."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    L = ctypes.c_long

    def check(ret, what):
        if ret < 0:
            raise OSError(ctypes.get_errno(), "kernel lockdown: " + what)
        return ret

    # no_new_privs: Landlock needs it, and it stops an exec (if one got through) from
    # regaining the capabilities dropped below.
    check(libc.prctl(L(38), L(1), L(0), L(0), L(0)), "no_new_privs")
    if abi > 0:
        fs = 0
        for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12):  # write file, remove, make_*
            fs |= 1 << bit
        if abi >= 2:
            fs |= 1 << 13  # REFER: rename/link across folders
        if abi >= 3:
            fs |= 1 << 14  # TRUNCATE
        net = 0b11 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP, with no rule allowing any
        scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets | signals

        class RulesetAttr(ctypes.Structure):
            _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64),
                        ("scoped", ctypes.c_uint64)]

        class PathBeneath(ctypes.Structure):
            _pack_ = 1
            _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

        # Landlock's syscall numbers (444-446) are the same on every architecture.
        attr = RulesetAttr(fs, net, scoped)
        size = 8 if abi < 4 else (16 if abi < 6 else 24)
        ruleset = check(libc.syscall(L(444), ctypes.byref(attr), L(size), L(0)), "create")
        folder = os.open(workdir, os.O_PATH | os.O_CLOEXEC)
        rule = PathBeneath(fs, folder)
        check(libc.syscall(L(445), L(ruleset), L(1), ctypes.byref(rule), L(0)), "add rule")
        check(libc.syscall(L(446), L(ruleset), L(0)), "restrict")
        os.close(folder)
        os.close(ruleset)

    # capset(v3 header, zeroed sets): keep the uid but no privileges, even as root.
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    check(libc.capset(header, data), "capset")


def install_audit_hook(workdir):
    import posixpath, _posixsubprocess
    realpath, normpath, join = posixpath.realpath, posixpath.normpath, posixpath.join
    dirname, basename, isdir = posixpath.dirname, posixpath.basename, posixpath.isdir
    readlink, write, _exit = os.readlink, os.write, os._exit
    getpid, fsdecode = os.getpid, os.fsdecode
    root = realpath(workdir)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    refused = {
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "subprocess.Popen", "pty.spawn", "os.killpg",
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
        "socket.gethostbyaddr", "socket.getnameinfo", "socket.sethostname",
        "resource.setrlimit", "resource.prlimit",
        "sqlite3.enable_load_extension", "sqlite3.load_extension",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    }
    refused_imports = {"_xxsubinterpreters", "_xxinterpchannels", "_interpreters",
                       "_testcapi", "_testinternalcapi", "_posixsubprocess"}

    def block(event, args):
        try:
            msg = "\nftpipe-sandbox: blocked %%s %%r\n" %% (event, args)
        except BaseException:
            msg = "\nftpipe-sandbox: blocked %%s\n" %% event
        write(2, msg[-500:].encode("utf-8", "replace"))
        _exit(EXIT_BLOCKED)

    def resolve(path, dir_fd=-1, follow=True):
        """Absolute path the call acts on, or None when it cannot be known."""
        if type(path) is bytes:
            path = fsdecode(path)
        elif type(path) is not str:
            return None
        if dir_fd not in (None, -1):
            path = join(readlink("/proc/self/fd/%%d" %% dir_fd), path)
        if follow:
            return realpath(path)
        # Removing or renaming a symlink acts on the link itself, not on its target.
        return normpath(join(realpath(dirname(path) or "."), basename(path)))

    def inside(path):
        return path is not None and (path == root or path.startswith(root + "/"))

    def hook(event, args):
        if event in refused or event.startswith("ctypes."):
            block(event, args)
        elif event == "open":
            path, _mode, flags = args
            if type(path) is int:  # an already open descriptor
                return
            target = resolve(path)
            if inside(target):
                return
            # No write access outside, and no handles on outside folders, because the
            # hook cannot see the dir_fd of a later os.open(..., dir_fd=fd).
            if (flags or 0) & write_flags or target is None or isdir(target):
                block(event, args)
        elif event in ("os.remove", "os.rmdir", "os.mkdir"):
            if not inside(resolve(args[0], args[-1], follow=False)):
                block(event, args)
        elif event in ("os.rename", "os.link"):
            src, dst, src_fd, dst_fd = args
            if not (inside(resolve(src, src_fd, False)) and inside(resolve(dst, dst_fd, False))):
                block(event, args)
        elif event == "os.symlink":
            if not inside(resolve(args[1], args[2], follow=False)):
                block(event, args)
        elif event in ("os.chmod", "os.chown", "os.utime", "os.truncate", "os.chflags",
                       "os.lchflags", "os.setxattr", "os.removexattr", "shutil.rmtree"):
            path = args[0]
            with_dir_fd = ("os.chmod", "os.chown", "os.utime", "shutil.rmtree")
            dir_fd = args[-1] if event in with_dir_fd else -1
            if type(path) is not int and not inside(resolve(path, dir_fd)):
                block(event, args)
        elif event == "sqlite3.connect":
            db = args[0]
            if db not in (":memory:", b":memory:", "") and not inside(resolve(db)):
                block(event, args)
        elif event == "os.kill":
            if args[0] != getpid():
                block(event, args)
        elif event == "import" and args[0] in refused_imports:
            block(event, args)

    # _posixsubprocess.fork_exec starts processes without an audit event of its own.
    def no_fork_exec(*args, **kwargs):
        block("_posixsubprocess.fork_exec", ())

    _posixsubprocess.fork_exec = no_fork_exec
    sys.addaudithook(hook)


def main():
    workdir, memory_mb, cpu_s, fsize, abi, audit = sys.argv[1:7]
    token = sys.stdin.readline().strip().encode()
    try:
        with open(os.path.join(workdir, "program.py"), "rb") as f:
            source = f.read()
        set_limits(int(memory_mb), int(cpu_s), int(fsize))
        kernel_lockdown(workdir, int(abi))
        if audit == "1":
            install_audit_hook(workdir)
    except BaseException as e:
        os.write(2, ("ftpipe-sandbox: setup failed: %%r\n" %% (e,)).encode())
        os._exit(EXIT_SETUP)

    import traceback, types
    module = types.ModuleType("__sandbox__")
    module.__file__ = os.path.join(workdir, "program.py")
    sys.modules["__sandbox__"] = module
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        sys.stdout.flush()
    except MemoryError:
        os.write(2, b"\nMemoryError\n")
        os._exit(EXIT_MEMORY)
    except SystemExit as e:
        os.write(2, ("\nthe program called exit(%%r) before its end\n" %% (e.code,)).encode())
        os._exit(1)
    except BaseException:
        try:
            # Skip the runner's own frame: the traceback should show only the program.
            etype, value, tb = sys.exc_info()
            traceback.print_exception(etype, value, tb.tb_next)
            sys.stderr.flush()
        finally:
            os._exit(1)
    os.write(1, b"\n" + token)
    os._exit(0)


main()
''' % {"blocked": _EXIT_BLOCKED, "memory": _EXIT_MEMORY, "setup": _EXIT_SETUP}


@functools.cache
def _landlock_abi() -> int:
    """Landlock ABI version the kernel offers (0 when unavailable). Probed once."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
        abi = libc.syscall(ctypes.c_long(444), None, ctypes.c_long(0), ctypes.c_long(1))
    except (OSError, AttributeError):
        return 0
    return max(int(abi), 0)


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """``unshare`` command prefix when user+net+pid namespaces work here, else (). Probed once."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    cmd = (exe, *_UNSHARE_ARGS)
    try:
        probe = subprocess.run([*cmd, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return cmd if probe.returncode == 0 else ()


def isolation_layers() -> tuple[str, ...]:
    """Names of the defenses active on this host, for run metadata and logs.

    Returns:
        For example ``("process", "rlimits", "namespaces", "landlock-v7", "no-capabilities",
        "audit-hook")``.
    """
    layers = ["process", "rlimits"]
    if _unshare_prefix():
        layers.append("namespaces")
    if _landlock_abi():
        layers.append(f"landlock-v{_landlock_abi()}")
    layers += ["no-capabilities", "audit-hook"]
    return tuple(layers)


def _tail(f, limit: int) -> str:
    """Last ``limit`` characters of an open binary temp file."""
    f.seek(0, os.SEEK_END)
    f.seek(max(f.tell() - limit * 4, 0))
    return f.read().decode("utf-8", "replace")[-limit:]


def _wait_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait until the process exits, without reaping it; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _kill_group(pid: int) -> None:
    """SIGKILL the item's process group and the item itself (in case it left the group).

    Only call this while the item is still unreaped, so neither id can have been reused.
    """
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _run(
    program: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    audit_hook: bool = True,
    kernel_layers: bool = True,
) -> SandboxResult:
    """run_python with switches to turn layers off, so tests can check each layer alone."""
    try:
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="ftpipe-sandbox-"))
    except OSError as e:
        return SandboxResult(False, "error", f"could not create a work folder: {e}")
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        prefix = _unshare_prefix() if kernel_layers else ()
        abi = _landlock_abi() if kernel_layers else 0
        cpu_s = math.ceil(timeout_s) + 1
        args = [workdir, memory_mb, cpu_s, _FILE_SIZE_LIMIT, abi, int(audit_hook)]
        cmd = [*prefix, sys.executable, "-I", "-B", "-c", _RUNNER, *map(str, args)]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            # Threaded BLAS pools reserve address space per thread and trip RLIMIT_AS.
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        token = secrets.token_hex(16)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err,
                start_new_session=True, close_fds=True,
            )
            try:
                try:
                    proc.stdin.write(token.encode() + b"\n")
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                timed_out = not _wait_unreaped(proc.pid, timeout_s)
            finally:
                # Kill the group before reaping, while the leader still holds its pid, so the
                # group id cannot have been reused by an unrelated process. This also ends
                # anything the item left running.
                _kill_group(proc.pid)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
            detail = _tail(err, _DETAIL_CHARS)
            finished = _tail(out, len(token)) == token
        cpu_limited = usage.ru_utime + usage.ru_stime >= cpu_s
        return _classify(proc.returncode, timed_out, cpu_limited, finished, detail, timeout_s)
    except OSError as e:
        # The sandbox itself failed (disk full, no interpreter): not the program's fault.
        return SandboxResult(False, "error", f"sandbox failure: {e}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _classify(
    rc: int, timed_out: bool, cpu_limited: bool, finished: bool, detail: str, timeout_s: float
) -> SandboxResult:
    """Map how the item ended to a SandboxResult."""
    if timed_out:
        return SandboxResult(False, "timeout", f"killed after {timeout_s:g} s\n{detail}".strip())
    if rc == 0 and finished:
        return SandboxResult(True, "passed", detail)
    if rc in (-signal.SIGXCPU, -signal.SIGKILL) and cpu_limited:
        # Several busy threads can use up the CPU limit before the wall-clock one.
        return SandboxResult(False, "timeout", f"CPU time limit\n{detail}".strip())
    if rc == _EXIT_MEMORY or rc == -signal.SIGKILL:
        # We only send SIGKILL on timeout, so another one is the out-of-memory killer.
        return SandboxResult(False, "memory", detail)
    if rc == _EXIT_BLOCKED:
        return SandboxResult(False, "blocked", detail)
    if rc == _EXIT_SETUP:
        return SandboxResult(False, "error", detail)
    return SandboxResult(False, "failed", detail)


def run_python(program: str, *, timeout_s: float = 10.0, memory_mb: int = 512) -> SandboxResult:
    """Run one untrusted Python program (generated code plus its tests) in the sandbox.

    Never raises for anything the program does; every outcome is a SandboxResult.

    Args:
        program: Python source; it passes when it runs to its end without an exception.
        timeout_s: Wall-clock limit in seconds; the item's whole process group is killed.
        memory_mb: Address-space limit in MiB.

    Returns:
        The outcome; ``passed`` is True only for a clean run within the limits.
    """
    return _run(program, timeout_s=timeout_s, memory_mb=memory_mb)


def run_many(programs: list[str], *, workers: int = 2, **kw) -> list[SandboxResult]:
    """Run programs concurrently, each in its own sandbox, results in input order.

    Args:
        programs: Python sources, as for :func:`run_python`.
        workers: How many items run at once.
        **kw: ``timeout_s`` and ``memory_mb``, passed to :func:`run_python`.

    Returns:
        One SandboxResult per program, in the same order.
    """
    # Threads are enough: each item is a subprocess, and Popen is thread-safe without preexec_fn.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda p: run_python(p, **kw), programs))
