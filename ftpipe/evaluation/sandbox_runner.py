"""Child side of :mod:`ftpipe.sandbox`: locks the process down, then runs one program.

The parent starts it as ``python -I -B /path/to/sandbox_runner.py CONFIG_JSON`` (by file
path, because ``-I`` keeps ftpipe off the child's import path), with the completion token
as the only line on stdin. It uses the standard library only. Importing this module has
no side effects; :mod:`ftpipe.sandbox` imports its exit codes and :func:`landlock_abi`.

Order of the lockdown, each step needing the privileges the previous ones leave:
resource limits, the switch of user id (while still root), ``no_new_privs``, Landlock,
seccomp, dropping every capability, and last the audit hook.
"""

from __future__ import annotations

import os
import sys

# Dedicated exit codes that tell the parent what happened.
EXIT_BLOCKED = 90  # the audit hook refused an action
EXIT_MEMORY = 91  # MemoryError
EXIT_SETUP = 92  # the lockdown itself failed: the program never ran

# Landlock filesystem rights (linux/landlock.h).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_ALL = sum(1 << bit for bit in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
FS_REFER = 1 << 13  # ABI 2: rename/link across folders
FS_TRUNCATE = 1 << 14  # ABI 3
NET_TCP = 0b11  # ABI 4: bind and connect
SCOPE_ALL = 0b11  # ABI 6: abstract unix sockets and signals outside the sandbox

# Syscall numbers; Landlock's are the same on every architecture.
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_PR_SET_KEEPCAPS = 8
_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
CAP_SETUID = 7
_CAP_VERSION_3 = 0x20080522

# seccomp: per architecture, the audit arch and the numbers of the system calls we filter.
SECCOMP_ARCHES = {
    "x86_64": (0xC000003E, {
        "connect": 42, "sendto": 44, "sendmsg": 46, "sendmmsg": 307,
        "chmod": 90, "fchmod": 91, "fchmodat": 268,
        "utime": 132, "utimes": 235, "futimesat": 261, "utimensat": 280,
        "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190,
        "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199,
    }),
    "aarch64": (0xC00000B7, {
        "connect": 203, "sendto": 206, "sendmsg": 211, "sendmmsg": 269,
        "fchmod": 52, "fchmodat": 53, "utimensat": 88,
        "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7,
        "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16,
    }),
}
# Newer system calls have one number on every architecture.
_SYSCALLS_EVERYWHERE = {"io_uring_setup": 425, "fchmodat2": 452, "setxattrat": 463,
                        "removexattrat": 466}
# io_uring can connect and send without the system calls above.
_DENIED_NETWORK = ("connect", "sendmsg", "sendmmsg", "io_uring_setup")
_DENIED_METADATA = ("chmod", "fchmod", "fchmodat", "fchmodat2", "utime", "utimes", "futimesat",
                    "utimensat", "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
                    "removexattr", "lremovexattr", "fremovexattr", "removexattrat")
_EACCES, _EPERM = 13, 1

# Readable places outside the Python installation, found by running ordinary programs.
# Shared libraries: extension modules (sqlite3, ssl, numpy) load them on first import.
_READ_FOLDERS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64",
                 "/usr/share/zoneinfo")  # for the zoneinfo module
# The local time zone (else localtime silently turns into UTC) and random devices.
_READ_FILES = ("/etc/localtime", "/dev/urandom", "/dev/random")


def landlock_abi() -> int:
    """Landlock ABI version the kernel offers (0 when unavailable)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
        abi = libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), None,
                           ctypes.c_long(0), ctypes.c_long(1))
    except (OSError, AttributeError):
        return 0
    return max(int(abi), 0)


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _prctl(what: str, option: int, arg2: int, arg3=None) -> int:
    """prctl(option, arg2, arg3, 0, 0), integers passed at the C long width it expects."""
    ctypes, libc = _libc()
    zero = ctypes.c_long(0)
    arg3 = zero if arg3 is None else arg3
    return _check(libc.prctl(ctypes.c_int(option), ctypes.c_long(arg2), arg3, zero, zero), what)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        import ctypes

        raise OSError(ctypes.get_errno(), "lockdown: " + what)
    return ret


def _capset(effective: int, permitted: int) -> None:
    """Set this thread's capability sets (the inheritable set stays empty)."""
    ctypes, libc = _libc()
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, 0,
                                 effective >> 32, permitted >> 32, 0)
    _check(libc.capset(header, data), "capset")


def set_limits(memory_mb: int, cpu_s: int, fsize: int, max_tasks: int) -> None:
    import resource
    import signal

    mem = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    # The hard CPU limit one second later kills code that ignores SIGXCPU.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if max_tasks:
        # Processes plus threads of this real uid. The parent only asks for it where the
        # kernel enforces it: a real uid other than 0 (see switch_real_uid) or a user
        # namespace mapped to a non-root user.
        resource.setrlimit(resource.RLIMIT_NPROC, (max_tasks, max_tasks))
    # Oversized writes then raise OSError instead of killing the process silently.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def switch_real_uid(uid: int) -> None:
    """Become ``uid`` for the kernel's process accounting, keeping root's file access.

    The kernel never applies RLIMIT_NPROC to real uid 0, and a process may set its uids
    back to any uid it still holds, so all of real, effective and saved uid move to an
    otherwise unused ``uid``. That also puts every root-owned process out of reach of
    kill() and ptrace(). Only the filesystem uid is set back to 0: the Python installation
    may live under a folder only root can enter (here /root/.pyenv). Files are still
    confined by Landlock where present, and with no capabilities left this uid 0 has only
    an owner's permission bits.
    """
    _, libc = _libc()
    # Keep the permitted capabilities across the uid change, long enough for setfsuid.
    _prctl("keepcaps", _PR_SET_KEEPCAPS, 1)
    os.setresuid(uid, uid, uid)
    _capset(1 << CAP_SETUID, 1 << CAP_SETUID)
    libc.setfsuid(0)  # returns the previous fsuid, never an error
    _prctl("keepcaps", _PR_SET_KEEPCAPS, 0)
    if os.getresuid() != (uid, uid, uid):
        raise OSError("lockdown: uid switch did not hold")


def read_roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Folders and single files the program may read: (folders, files), real paths.

    The Python installation (standard library, extension modules, site-packages), the
    places listed above, and this process's own /proc entry.
    """
    folders = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    folders.update(_READ_FOLDERS)
    folders.add("/proc/self")  # resolves to /proc/<this pid>: status, fd, maps
    folders = {os.path.realpath(f) for f in folders if os.path.isdir(f)}
    files = {os.path.realpath(f) for f in _READ_FILES if os.path.exists(f)}
    return tuple(sorted(folders)), tuple(sorted(files))


def landlock(workdir: str, abi: int, read_folders, read_files, devnull: str) -> None:
    """Reads only of ``read_*``, writes only under ``workdir``; no exec, TCP, signals out."""
    ctypes, libc = _libc()
    L = ctypes.c_long

    reads = FS_READ_FILE | FS_READ_DIR
    fs = FS_EXECUTE | FS_WRITE_FILE | reads | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_ALL
    if abi >= 2:
        fs |= FS_REFER
    if abi >= 3:
        fs |= FS_TRUNCATE
    net = NET_TCP if abi >= 4 else 0  # handled, with no rule allowing any port
    scoped = SCOPE_ALL if abi >= 6 else 0

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64),
                    ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = RulesetAttr(fs, net, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    ruleset = _check(libc.syscall(L(_SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr),
                                  L(size), L(0)), "create ruleset")

    def allow(path: str, rights: int) -> None:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            rule = PathBeneath(rights & fs, fd)
            _check(libc.syscall(L(_SYS_LANDLOCK_ADD_RULE), L(ruleset), L(1),
                                ctypes.byref(rule), L(0)), "add rule " + path)
        finally:
            os.close(fd)

    # Everything in the work folder except running files from it.
    allow(workdir, fs & ~FS_EXECUTE)
    for folder in read_folders:
        allow(folder, reads)
    for file in read_files:
        allow(file, FS_READ_FILE)
    allow(devnull, FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE)
    _check(libc.syscall(L(_SYS_LANDLOCK_RESTRICT_SELF), L(ruleset), L(0)), "restrict")
    os.close(ruleset)


def seccomp_filter(machine: str) -> None:
    """Make a few system calls that test code does not need fail.

    connect(), sendmsg(), sendmmsg(), io_uring and sendto() with an address fail with
    EACCES: the namespaces and Landlock stop TCP and UDP, but not a connect() to an
    existing pathname unix socket (a root-owned daemon's control socket, say), nor a
    datagram sent to one. socketpair() and plain send() still work (asyncio needs them).

    Changes of permission bits, timestamps and extended attributes fail with EPERM:
    Landlock has no right for them, and the item keeps root's file access (see
    switch_real_uid), so it could otherwise chmod any root-owned file on the host. This
    also applies inside the work folder, where shutil.copy/copy2 (which copy the mode)
    therefore fail; shutil.copyfile works.

    A system call through any other ABI (32-bit, x32) ends the process.
    """
    ctypes, libc = _libc()
    arch, numbers = SECCOMP_ARCHES[machine]
    numbers = {**numbers, **_SYSCALLS_EVERYWHERE}
    allow, kill = 0x7FFF0000, 0x80000000

    def load(offset):  # A = 32-bit word of struct seccomp_data at offset
        return (0x20, 0, 0, offset)

    def jump_eq(k, if_true, if_false):
        return (0x15, if_true, if_false, k)

    def ret(k):
        return (0x06, 0, 0, k)

    def fail(errno):
        return ret(0x00050000 | errno)

    prog = [load(4), jump_eq(arch, 1, 0), ret(kill), load(0)]
    if machine == "x86_64":
        prog += [(0x35, 0, 1, 0x40000000), ret(kill)]  # x32 numbers; 0x35: jump if >=
    for names, errno in ((_DENIED_NETWORK, _EACCES), (_DENIED_METADATA, _EPERM)):
        for name in names:
            if name in numbers:  # aarch64 has no chmod, utime, ...
                prog += [jump_eq(numbers[name], 0, 1), fail(errno)]
    # sendto: allowed only with no address (args[4], a 64-bit pointer at offset 48).
    prog += [jump_eq(numbers["sendto"], 0, 5), load(48), jump_eq(0, 0, 2), load(52),
             jump_eq(0, 1, 0), fail(_EACCES), ret(allow)]

    class Instruction(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Instruction))]

    code = (Instruction * len(prog))(*(Instruction(*i) for i in prog))
    fprog = Program(len(prog), code)
    _prctl("seccomp", _PR_SET_SECCOMP, 2, ctypes.byref(fprog))  # 2: filter mode


def _within(path: str, folders) -> bool:
    return any(path == f or path.startswith(f + "/") for f in folders)


def kernel_lockdown(workdir: str, abi: int, seccomp: str, read_folders, read_files) -> None:
    # no_new_privs: Landlock and seccomp need it, and it stops an exec (if one got
    # through) from regaining the capabilities dropped below.
    _prctl("no_new_privs", _PR_SET_NO_NEW_PRIVS, 1)
    if abi > 0:
        landlock(workdir, abi, read_folders, read_files, os.devnull)
    if seccomp:
        seccomp_filter(seccomp)
    # No capabilities at all: an evaluator running as root lends no root powers.
    _capset(0, 0)


def install_audit_hook(workdir: str, read_folders, read_files) -> None:
    """Refuse, by ending the process, what ordinary test code never needs to do.

    A guard against careless code with a clear "blocked" status, and the only read and
    write guard on hosts without Landlock; determined code can get past it (it relies on
    Python-level helpers such as posixpath that the program can monkeypatch).
    """
    import _posixsubprocess
    import posixpath

    realpath, normpath, join = posixpath.realpath, posixpath.normpath, posixpath.join
    dirname, basename, isdir = posixpath.dirname, posixpath.basename, posixpath.isdir
    readlink, write, _exit = os.readlink, os.write, os._exit
    getpid, fsdecode = os.getpid, os.fsdecode
    root = realpath(workdir)
    devnull, exit_blocked = os.devnull, EXIT_BLOCKED  # bound now: the program can reach globals
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
            msg = "\nftpipe-sandbox: blocked %s %r\n" % (event, args)
        except BaseException:
            msg = "\nftpipe-sandbox: blocked %s\n" % event
        write(2, msg[-500:].encode("utf-8", "replace"))
        _exit(exit_blocked)

    def resolve(path, dir_fd=-1, follow=True):
        """Absolute path the call acts on, or None when it cannot be known."""
        if type(path) is bytes:
            path = fsdecode(path)
        elif type(path) is not str:
            return None
        if dir_fd not in (None, -1):
            path = join(readlink("/proc/self/fd/%d" % dir_fd), path)
        if follow:
            return realpath(path)
        # Removing or renaming a symlink acts on the link itself, not on its target.
        return normpath(join(realpath(dirname(path) or "."), basename(path)))

    def under(path, folder):
        return path == folder or path.startswith(folder + "/")

    def inside(path):
        return path is not None and under(path, root)

    def readable(path):
        return path is not None and (
            under(path, root) or path in read_files
            or any(under(path, folder) for folder in read_folders)
        )

    def hook(event, args):
        if event in refused or event.startswith("ctypes."):
            block(event, args)
        elif event == "open":
            path, _mode, flags = args
            if type(path) is int:  # an already open descriptor
                return
            target = resolve(path)
            if inside(target) or target == devnull:
                return
            # Outside the work folder: read only, only the allowed files, and no handles
            # on folders, because the hook cannot see the dir_fd of a later
            # os.open(..., dir_fd=fd).
            if (flags or 0) & write_flags or not readable(target) or isdir(target):
                block(event, args)
        elif event in ("os.listdir", "os.scandir"):
            path = args[0]
            if path is None:
                path = "."
            if type(path) is not int and not readable(resolve(path)):
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


def run_program(source: bytes, filename: str, token: bytes) -> None:
    """Run the program as module ``__sandbox__``; write the token only if it ran to its end."""
    import traceback
    import types

    module = types.ModuleType("__sandbox__")
    module.__file__ = filename
    sys.modules["__sandbox__"] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
        sys.stdout.flush()
    except MemoryError:
        os.write(2, b"\nMemoryError\n")
        os._exit(EXIT_MEMORY)
    except SystemExit as e:
        os.write(2, ("\nthe program called exit(%r) before its end\n" % (e.code,)).encode())
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


def main(argv: list[str] | None = None) -> None:
    """Entry point. The single argument is a JSON object with the keys the parent sends:
    workdir, memory_mb, cpu_s, file_size, max_tasks (0: no limit), task_uid (-1: keep),
    landlock_abi (0: none), seccomp (machine name, "" for none), audit_hook (bool)."""
    import json

    cfg = json.loads((sys.argv[1:] if argv is None else argv)[0])
    workdir = cfg["workdir"]
    token = sys.stdin.readline().strip().encode()
    filename = os.path.join(workdir, "program.py")
    try:
        with open(filename, "rb") as f:
            source = f.read()
        set_limits(cfg["memory_mb"], cfg["cpu_s"], cfg["file_size"], cfg["max_tasks"])
        if cfg["task_uid"] >= 0:
            switch_real_uid(cfg["task_uid"])
        read_folders, read_files = read_roots()
        # Import paths outside the readable folders would only fail later, and could
        # only hold code from outside the Python installation.
        sys.path[:] = [p for p in sys.path if _within(os.path.realpath(p), read_folders)]
        kernel_lockdown(workdir, cfg["landlock_abi"], cfg["seccomp"], read_folders, read_files)
        if cfg["audit_hook"]:
            install_audit_hook(workdir, read_folders, read_files)
    except BaseException as e:
        os.write(2, ("ftpipe-sandbox: setup failed: %r\n" % (e,)).encode())
        os._exit(EXIT_SETUP)
    run_program(source, filename, token)


if __name__ == "__main__":
    main()
