"""Run untrusted generated Python (HumanEval/MBPP-style code tasks) against its tests.

Each item runs in its own short-lived process, with layered defenses because we cannot
count on containers being available. The child side lives in :mod:`ftpipe.evaluation.sandbox_runner`,
started as ``python -I -B /path/to/sandbox_runner.py CONFIG`` (by path: ``-I`` keeps
ftpipe off the child's import path).

1. **Process boundary.** A fresh interpreter per item, in a new session (its own process
   group, no controlling terminal), with a minimal environment, stdin holding only a
   one-time token, and a throwaway working folder made with :mod:`tempfile` and removed
   afterwards. Its stdout and stderr are pipes that the parent reads, keeping only their
   tails; past ``_OUTPUT_LIMIT`` (4 MiB) in all the item is killed and fails, so a
   gigabyte of output costs the grader neither memory nor disk. On a wall-clock timeout
   the whole process group is killed.
2. **Resource limits** set in the child before the untrusted code runs: address space
   (``memory_mb``, per process), CPU seconds, size of any file written (64 MiB), no core
   dumps, and ``RLIMIT_NPROC`` (``MAX_TASKS`` processes plus threads) where the kernel
   enforces it: it exempts real uid 0, hence layer 3, and it counts per user namespace.
3. **An own uid** when the evaluator is root: the item's real, effective and saved uid
   become a random otherwise unused uid (from ``_TASK_UIDS``), so ``RLIMIT_NPROC``
   applies and root-owned processes are out of reach of kill() and ptrace() even without
   the layers below. Only its filesystem uid stays 0, because the Python installation may
   sit under a folder only root can enter (here /root/.pyenv). As another user, the item
   keeps that user's uid, and the user namespace below makes ``RLIMIT_NPROC`` count the
   item alone.
4. **Kernel restrictions.** Always: ``no_new_privs`` and all capabilities dropped. Where
   the host offers them (probed once and cached):

   - ``unshare --net --pid --fork --kill-child`` (plus ``--map-root-user`` when not
     root): empty network and PID namespaces. No network interface, no outside process
     addressable, and everything the item started dies with it.
   - Landlock (Linux >= 5.13): reads only from the Python installation (``sys.prefix``,
     ``base_prefix``, ``exec_prefix``), the system library folders that extension modules
     load libraries from, /usr/share/zoneinfo, /etc/localtime, /dev/null, /dev/urandom,
     /dev/random and the item's own /proc entry; writes only in the working folder (and
     /dev/null); no exec() of any file; no TCP bind/connect (ABI >= 4); no signals or
     abstract unix sockets to processes outside the sandbox (ABI >= 6). The list was
     found by running ordinary programs (stdlib imports including sqlite3, ssl, decimal,
     zoneinfo, asyncio, and numpy) with everything else denied.
   - seccomp (x86_64, aarch64): connect(), sendmsg(), sendmmsg(), io_uring and addressed
     sendto() fail, which also stops pathname unix sockets (Landlock does not cover
     them); chmod, utime and extended-attribute changes fail (Landlock has no right for
     them, and filesystem uid 0 owns most of the host's files).

   These hold even against code that gets past layer 5, and every process the item
   manages to start inherits them.
5. **An audit hook** (:func:`sys.addaudithook`, which cannot be removed once added) that
   ends the process at once with a dedicated exit code when the code tries: network
   (connect, bind, sendto, name lookups), process creation (subprocess, os.system, exec,
   fork, posix_spawn), signals to any other process, ctypes, raising resource limits,
   sub-interpreters, reading or listing files outside the places Landlock allows, or
   writing, creating, removing, renaming or re-permissioning any path outside its
   working folder. This layer gives a clear "blocked" status and stands alone on hosts
   without Landlock and namespaces, but it is a guard against accidents and careless
   code, not a proof against a determined attacker (the program can monkeypatch
   ``posixpath``, which the hook uses to resolve paths); the kernel layers are the real
   boundary.

:func:`isolation_layers` names the layers active on this host (``nproc``, ``own-uid``,
``namespaces``, ``landlock-vN``, ``landlock-reads``, ``seccomp`` appear only where they
hold), and :func:`reads_guarded` says whether the kernel guards reads; without Landlock
only the bypassable audit hook does, and reports should show that.

Known gaps:

(a) A program written to cheat can report a pass: it runs in the runner's own process,
    so it can read the completion token from the runner's frame and print it. The token
    stops accidental early exits, not deliberate forgery. (No containment is lost.)
(b) Memory is limited per process, so with the hook bypassed an item can hold up to
    ``MAX_TASKS`` times ``memory_mb``; disk use of the working folder is bounded only
    per file and by the time limit. (A cgroup would bound both; we do not create one.)
(c) With the hook bypassed, the item can still stat() paths it may not read (existence,
    size, times), since Landlock does not guard path lookup.
(d) Without Landlock, reads and writes outside the working folder are guarded only by the
    audit hook, and the item keeps root's file access (filesystem uid 0, owner bits).
    Without the namespaces, a process that starts its own session outlives the item
    (CPU-limited, and unable to signal others under its own uid). As a non-root user
    without user namespaces there is no process-count limit; only the hook stops fork.
(e) Without seccomp (other architectures), pathname unix sockets and chmod/utime of the
    host's files are stopped only by the hook. With it, chmod and utime fail inside the
    working folder too (shutil.copy and copy2 fail; shutil.copyfile works).
(f) The non-root path (user namespace, ``RLIMIT_NPROC`` inside it) follows the kernel's
    rules but has not been tested on a host where the evaluator is not root.

Outcome mapping: exit 0 *and* the runner's completion token -> ``passed``; wall-clock
or CPU limit -> ``timeout``; ``MemoryError`` or a SIGKILL we did not send (the kernel's
out-of-memory killer) -> ``memory``; an audit-hook refusal -> ``blocked``; too much
output or any other ending -> ``failed``; the sandbox itself could not run the item ->
``error``.

The token guards against false passes from careless code: code that calls ``exit(0)`` or
``os._exit(0)`` before its tests have run does not pass. The program runs as a module named
``__sandbox__``, so ``if __name__ == "__main__":`` blocks in generated code do not run
(as in the HumanEval harness); tests must be plain top-level statements.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ftpipe.evaluation import sandbox_runner
from ftpipe.evaluation.sandbox_runner import EXIT_BLOCKED, EXIT_MEMORY, EXIT_SETUP

STATUSES = ("passed", "failed", "timeout", "memory", "blocked", "error")

_RUNNER_PATH = os.path.abspath(sandbox_runner.__file__)
_FILE_SIZE_LIMIT = 64 * 2**20  # bytes; per file the item writes in its work folder
_OUTPUT_LIMIT = 4 * 2**20  # bytes of stdout plus stderr before the item is killed
# Processes plus threads per item (RLIMIT_NPROC), where enforceable. Enough for a thread
# pool of default size; small, because memory_mb applies to each process.
MAX_TASKS = 32
# Under root, items run as a random uid from this range: (first, count). Far above the
# uids distributions hand out, so no real user's processes share the count.
_TASK_UIDS = (0x6F000000, 2**20)
DETAIL_CHARS = 800
_UNSHARE_ARGS = ("--net", "--pid", "--fork", "--kill-child")


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


@functools.cache
def _landlock_abi() -> int:
    """Landlock ABI version the kernel offers (0 when unavailable). Probed once."""
    return sandbox_runner.landlock_abi()


@functools.cache
def _can_switch_uid() -> bool:
    """Whether items can run under their own real uid: we are root with CAP_SETUID."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/status") as f:
            caps = next(line for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caps.split()[1], 16) >> sandbox_runner.CAP_SETUID & 1)


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """``unshare`` command prefix when net+pid namespaces work here, else (). Probed once.

    Root needs no user namespace for them, and mapping root to itself in one would only
    keep real uid 0 (which RLIMIT_NPROC exempts); other users get one mapped to themselves.
    """
    exe = shutil.which("unshare")
    if not exe:
        return ()
    user = () if os.geteuid() == 0 else ("--map-root-user",)
    cmd = (exe, *user, *_UNSHARE_ARGS)
    try:
        probe = subprocess.run([*cmd, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return cmd if probe.returncode == 0 else ()


def _task_limit(kernel_layers: bool = True) -> tuple[int, int]:
    """(RLIMIT_NPROC, uid to switch to or -1) for an item; (0, -1) where no limit holds.

    The kernel ignores RLIMIT_NPROC for real uid 0, and otherwise counts every task of the
    real uid in the user namespace. So: as root, each item gets a uid of its own; as
    another user, the limit is set only inside a user namespace, where the count starts
    from the item alone.
    """
    if _can_switch_uid():
        first, count = _TASK_UIDS
        return MAX_TASKS, first + secrets.randbelow(count)
    if kernel_layers and _unshare_prefix():
        return MAX_TASKS, -1
    return 0, -1


def _seccomp_machine() -> str:
    """Architecture name the runner has a seccomp filter for, or ""."""
    machine = platform.machine()
    if sys.platform.startswith("linux") and machine in sandbox_runner.SECCOMP_ARCHES:
        return machine
    return ""


@dataclass(frozen=True)
class HostCapabilities:
    """Which kernel defenses this host offers the sandbox (probed once; tests skip by them)."""

    landlock_abi: int  # 0: no Landlock
    namespaces: bool  # net + pid namespaces through unshare
    seccomp: str  # architecture with a seccomp filter, or ""
    max_tasks: int  # RLIMIT_NPROC an item gets (0: no limit the kernel enforces)
    own_uid: bool  # items run under a uid of their own


def host_capabilities() -> HostCapabilities:
    """The defenses available here, as `isolation_layers` names them, in fields."""
    max_tasks, uid = _task_limit()
    return HostCapabilities(landlock_abi=_landlock_abi(), namespaces=bool(_unshare_prefix()),
                            seccomp=_seccomp_machine(), max_tasks=max_tasks, own_uid=uid >= 0)


def reads_guarded() -> bool:
    """Whether the kernel keeps items from reading files outside the Python installation.

    True where Landlock is available. Without it only the audit hook refuses such reads,
    which determined code can get past; reports should say so.
    """
    return _landlock_abi() > 0


def isolation_layers() -> tuple[str, ...]:
    """Names of the defenses active on this host, for run metadata and logs.

    Returns:
        For example ``("process", "rlimits", "nproc", "own-uid", "namespaces",
        "landlock-v7", "landlock-reads", "seccomp", "no-capabilities", "audit-hook")``.
        ``landlock-reads`` is there only when file reads are guarded by the kernel
        (:func:`reads_guarded`), ``nproc`` only when the process-count limit is one the
        kernel enforces, ``own-uid`` only when items run under a uid of their own.
    """
    layers = ["process", "rlimits"]
    if _task_limit()[0]:
        layers.append("nproc")
    if _can_switch_uid():
        layers.append("own-uid")
    if _unshare_prefix():
        layers.append("namespaces")
    if _landlock_abi():
        layers += [f"landlock-v{_landlock_abi()}", "landlock-reads"]
    if _seccomp_machine():
        layers.append("seccomp")
    layers += ["no-capabilities", "audit-hook"]
    return tuple(layers)


def _has_exited(pid: int) -> bool:
    """Whether the child has ended, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _capture(proc: subprocess.Popen, timeout_s: float) -> tuple[str, bytes, bytes]:
    """Read the item's stdout and stderr until it exits, keeping only their tails.

    Returns:
        (ending, stdout tail, stderr tail); ending is "exit", "timeout", or "output" when
        more than _OUTPUT_LIMIT bytes came (the caller then kills the item).
    """
    keep = {proc.stdout.fileno(): 64, proc.stderr.fileno(): DETAIL_CHARS * 4}
    tails = {fd: b"" for fd in keep}
    total = 0
    deadline = time.monotonic() + timeout_s
    try:
        exit_fd = os.pidfd_open(proc.pid)  # readable once the child has ended
    except (AttributeError, OSError):
        exit_fd = None  # kernel before 5.3: poll instead
    with selectors.DefaultSelector() as sel:
        for fd in keep:
            sel.register(fd, selectors.EVENT_READ)
        if exit_fd is not None:
            sel.register(exit_fd, selectors.EVENT_READ)
        exited = False
        try:
            while True:
                if not exited:
                    exited = exit_fd is None and _has_exited(proc.pid)
                left = deadline - time.monotonic()
                if not exited and left <= 0:
                    return "timeout", tails[proc.stdout.fileno()], tails[proc.stderr.fileno()]
                # Once it has ended, only take what is already in the pipes.
                wait = 0 if exited else min(left, 0.05) if exit_fd is None else left
                events = sel.select(wait)
                if exited and not events:
                    break
                for key, _ in events:
                    if key.fd == exit_fd:
                        exited = True
                        sel.unregister(exit_fd)
                        continue
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fd)
                        continue
                    total += len(data)
                    tails[key.fd] = (tails[key.fd] + data)[-keep[key.fd]:]
                if total > _OUTPUT_LIMIT:
                    return "output", tails[proc.stdout.fileno()], tails[proc.stderr.fileno()]
        finally:
            if exit_fd is not None:
                os.close(exit_fd)
    return "exit", tails[proc.stdout.fileno()], tails[proc.stderr.fileno()]


def _kill_group(pid: int) -> None:
    """SIGKILL the item's process group and the item itself (in case it left the group).

    Only call this while the item is still unreaped, so neither id can have been reused.
    """
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_python(
    program: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    audit_hook: bool = True,
    kernel_layers: bool = True,
) -> SandboxResult:
    """Run one untrusted Python program (generated code plus its tests) in the sandbox.

    Never raises for anything the program does; every outcome is a SandboxResult.

    Args:
        program: Python source; it passes when it runs to its end without an exception.
        timeout_s: Wall-clock limit in seconds; the item's whole process group is killed.
        memory_mb: Address-space limit in MiB.
        audit_hook: Testing switch: False leaves the in-process audit hook out.
        kernel_layers: Testing switch: False drops the namespaces, Landlock and seccomp (as on
            hosts without them); the uid switch, rlimits and the capability drop stay. Tests
            turn layers off to check each of the others alone.

    Returns:
        The outcome; ``passed`` is True only for a clean run within the limits.
    """
    try:
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="ftpipe-sandbox-"))
    except OSError as e:
        return SandboxResult(False, "error", f"could not create a work folder: {e}")
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        prefix = _unshare_prefix() if kernel_layers else ()
        cpu_s = math.ceil(timeout_s) + 1
        max_tasks, task_uid = _task_limit(kernel_layers)
        config = {
            "workdir": workdir,
            "memory_mb": memory_mb,
            "cpu_s": cpu_s,
            "file_size": _FILE_SIZE_LIMIT,
            "max_tasks": max_tasks,
            "task_uid": task_uid,
            "landlock_abi": _landlock_abi() if kernel_layers else 0,
            "seccomp": _seccomp_machine() if kernel_layers else "",
            "audit_hook": audit_hook,
        }
        cmd = [*prefix, sys.executable, "-I", "-B", _RUNNER_PATH, json.dumps(config)]
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
        token = secrets.token_hex(16).encode()
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
        )
        try:
            try:
                proc.stdin.write(token + b"\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass
            ending, out, err = _capture(proc, timeout_s)
        finally:
            # Kill the group before reaping, while the leader still holds its pid, so the
            # group id cannot have been reused by an unrelated process. This also ends
            # anything the item left running.
            _kill_group(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            proc.stdout.close()
            proc.stderr.close()
        detail = err.decode("utf-8", "replace")[-DETAIL_CHARS:]
        if ending == "output":
            limit = f"output limit: more than {_OUTPUT_LIMIT // 2**20} MiB written, item killed"
            return SandboxResult(False, "failed", f"{limit}\n{detail}".strip())
        finished = out.endswith(token)
        cpu_limited = usage.ru_utime + usage.ru_stime >= cpu_s
        timed_out = ending == "timeout"
        return classify_ending(proc.returncode, timed_out, cpu_limited, finished, detail, timeout_s)
    except OSError as e:
        # The sandbox itself failed (no interpreter, no pipes): not the program's fault.
        return SandboxResult(False, "error", f"sandbox failure: {e}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def classify_ending(
    rc: int, timed_out: bool, cpu_limited: bool, finished: bool, detail: str, timeout_s: float
) -> SandboxResult:
    """Map how an item ended (exit code, timeouts, whether it reached its end) to a SandboxResult."""
    if timed_out:
        return SandboxResult(False, "timeout", f"killed after {timeout_s:g} s\n{detail}".strip())
    if rc == 0 and finished:
        return SandboxResult(True, "passed", detail)
    if rc in (-signal.SIGXCPU, -signal.SIGKILL) and cpu_limited:
        # Several busy threads can use up the CPU limit before the wall-clock one.
        return SandboxResult(False, "timeout", f"CPU time limit\n{detail}".strip())
    if rc == EXIT_MEMORY or rc == -signal.SIGKILL:
        # We only send SIGKILL on timeout or too much output, so another one is the
        # out-of-memory killer.
        return SandboxResult(False, "memory", detail)
    if rc == EXIT_BLOCKED:
        return SandboxResult(False, "blocked", detail)
    if rc == EXIT_SETUP:
        return SandboxResult(False, "error", detail)
    return SandboxResult(False, "failed", detail)


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
