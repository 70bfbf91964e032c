"""The sandboxed child's first code: install the audit hook, run behaviour_test.py, report.

Run as ``python -I -B sandbox_guard.py <scratch dir> <result fd>`` by
:mod:`repotune.evaluate.sandbox`. It lives in the package, not in the scratch directory, so
nothing the test writes can change it; hooks cannot be removed once added (PEP 578).

The hook is **not a boundary**: code in the same process can always find a way around an
in-process check (the hook's own state is Python objects; C extensions act without audit
events). Under bubblewrap it is a second layer that the sandbox does not rely on. Without
bubblewrap it is all there is, which is why that mode needs its own opt-in
(``evaluate.behaviour.allow_unisolated_execution``). It still closes the ways a security review
used: the ``gc`` functions that find its closure, SQLite (``ATTACH``/``VACUUM INTO`` open files
with no audit event, so no connection may be made), and ``os.mknod``/``os.mkfifo`` (no audit
event either: replaced by checked versions).

The result goes to ``<result fd>``, not to the output: one line, the type of the exception
that ended the test and the audit event refused, if any (``PermissionError open``). The parent
believes no more of it than a built-in exception's name and an event from :data:`EVENTS`.
"""

import os
import pathlib
import posix
import runpy
import sys

# Events the hook may refuse: the parent reports one only if it is listed here.
PROCESS_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "pty.spawn",
        "os.killpg",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.call_function",
        "ctypes.cdata",
        "resource.setrlimit",
        "resource.prlimit",
        "sys.remote_exec",
        # The hook's closure is found through these (then its refusals replaced).
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        # SQLite opens files in C, with no audit event (ATTACH, VACUUM INTO).
        "sqlite3.connect",
        "sqlite3.enable_load_extension",
    }
)
SOCKET_EVENTS = frozenset(
    {
        "socket.bind",
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyaddr",
        "socket.gethostbyname",
        "socket.gethostname",
        "socket.getnameinfo",
        "socket.getservbyname",
        "socket.getservbyport",
        "socket.sendmsg",
        "socket.sendto",
        "socket.sethostname",
    }
)
# event -> (positions of path arguments, position of the dir_fd argument or None)
PATH_EVENTS = {
    "os.chmod": ((0,), 2),
    "os.chown": ((0,), 3),
    "os.link": ((0, 1), 2),
    "os.mkdir": ((0,), 2),
    "os.remove": ((0,), 1),
    "os.rename": ((0, 1), 2),
    "os.rmdir": ((0,), 1),
    "os.symlink": ((1,), 2),
    "os.truncate": ((0,), None),
    "os.utime": ((0,), 3),
    "os.setxattr": ((0,), None),
    "os.removexattr": ((0,), None),
    "os.chflags": ((0,), None),
    "shutil.rmtree": ((0,), 1),
}
EVENTS = frozenset(
    {*PROCESS_EVENTS, *SOCKET_EVENTS, *PATH_EVENTS, "import", "open", "os.kill"}
    | {"object.__setattr__"}
    | {"os.listdir", "os.scandir", "os.mknod", "os.mkfifo"}
)
# Modules that reach the operating system with no audit event: _posixsubprocess.fork_exec
# starts programs, ctypes calls any C function, SQLite, dbm and readline write files.
MODULES = frozenset(
    {"_posixsubprocess", "_ctypes", "_sqlite3", "_dbm", "_gdbm", "readline", "_xxsubinterpreters"}
)


class SandboxRefusal(PermissionError):
    """An operation the sandbox does not allow (``event`` is the audit event refused)."""

    def __init__(self, event):
        super().__init__(f"behaviour test sandbox: {event} is not allowed")
        self.event = event


def _install(root):
    realpath, join, isabs, isdir = os.path.realpath, os.path.join, os.path.isabs, os.path.isdir
    getcwd, fsdecode, getpid = os.getcwd, os.fsdecode, os.getpid
    sep = os.sep
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    processes, modules, paths = PROCESS_EVENTS, MODULES, tuple(PATH_EVENTS.items())
    # pathlib's own classes, whose str() runs no code of the test's while they are unpatched.
    path_types = (pathlib.PurePath, pathlib.PurePosixPath, pathlib.Path, pathlib.PosixPath)
    # Readable: the scratch directory, Python's own library (sys.path as the guard starts, its
    # site-packages included), this process's /proc entry and harmless devices. Not the home
    # directory, not other processes' /proc entries (their environment), not /etc.
    readable = tuple(
        [realpath(entry) for entry in sys.path if entry and isabs(entry)]
        + [root, realpath(f"/proc/{getpid()}"), "/dev/null", "/dev/zero", "/dev/urandom"]
        + [realpath(sys.base_prefix), realpath(sys.prefix)]
    )

    def text(path):
        """A path as a str, without calling code the test defined: an ``__fspath__`` could
        answer the hook one path and the operation another, or reach the hook's frame."""
        if type(path) is str:
            return path
        if type(path) is bytes:
            return fsdecode(path)
        if any(type(path) is kind for kind in path_types):
            return str(path)
        refuse("open")

    def resolve(path, dir_fd=None):
        path = text(path)
        if isabs(path):
            base = ""
        elif dir_fd is not None and dir_fd != -1:
            base = realpath(f"/proc/self/fd/{int(dir_fd)}")
        else:
            base = getcwd()
        return realpath(join(base, path))

    def under(resolved, top):
        return resolved == top or resolved.startswith(top.rstrip(sep) + sep)

    def inside(path, dir_fd=None):
        return type(path) is int or under(resolve(path, dir_fd), root)

    def may_read(path):
        if type(path) is int:
            return True
        resolved = resolve(path)
        return any(under(resolved, top) for top in readable)

    def refuse(event):
        raise SandboxRefusal(event)

    # The hook calls nothing that raises audit events itself (realpath, getcwd and isdir
    # only stat and readlink), so it needs no re-entrancy guard, which threads could race.
    def hook(event, args):
        if (event.startswith("socket.") and event != "socket.__new__") or event in processes:
            refuse(event)
        elif event == "import":
            # A str subclass could answer `in` with its own code: compare an exact copy.
            name = args[0]
            if not isinstance(name, str) or str.__getitem__(name, slice(None)) in modules:
                refuse(event)
        elif event == "os.kill":
            if type(args[0]) is not int or args[0] != getpid():
                refuse(event)
        elif event == "open":
            path, mode, flags = args
            # Writing outside, or opening a directory outside as an fd that later
            # dir_fd-relative calls (whose open event omits the dir_fd) could write into.
            if (
                path is not None
                and not inside(path)
                and (flags & writing or (mode is None and isdir(path)) or not may_read(path))
            ):
                refuse(event)
        elif event == "object.__setattr__":
            # Patching pathlib would run the test's code in here.
            if any(args[0] is kind for kind in path_types):
                refuse(event)
        elif event in ("os.listdir", "os.scandir"):
            if args[0] is not None and not may_read(args[0]):
                refuse(event)
        else:
            for name, (positions, dir_fd_at) in paths:
                if name == event:
                    dir_fd = args[dir_fd_at] if dir_fd_at is not None else None
                    for position in positions:
                        if not inside(args[position], dir_fd):
                            refuse(event)

    def checked(event, make):
        """``os.mknod``/``os.mkfifo`` raise no audit event: these refuse one outside."""

        def make_inside(path, *args, dir_fd=None, **kwargs):
            if not inside(path, dir_fd):
                refuse(event)
            return make(path, *args, dir_fd=dir_fd, **kwargs)

        return make_inside

    for name in ("mknod", "mkfifo"):
        wrapped = checked(f"os.{name}", getattr(posix, name))
        setattr(os, name, wrapped)
        setattr(posix, name, wrapped)
    sys.addaudithook(hook)


def _report(error, result_fd):
    """Write the result line and return the exit status for ``error`` (None: passed)."""
    if error is None:
        return 0
    if isinstance(error, SystemExit) and error.code in (None, 0):
        return 0
    refused = type(error) is SandboxRefusal
    event = getattr(error, "event", "") if refused else ""
    name = "PermissionError" if refused else type(error).__name__
    os.write(result_fd, f"{name}{' ' + event if event else ''}\n".encode())
    return 1


def main() -> None:
    root = os.path.realpath(sys.argv[1])
    result_fd = int(sys.argv[2])
    sys.path.insert(0, root)
    sys.argv = ["behaviour_test.py"]
    for name in ("_posixsubprocess", "_ctypes"):
        sys.modules.pop(name, None)
    _install(root)
    error = None
    try:
        runpy.run_path(os.path.join(root, "behaviour_test.py"), run_name="__main__")
    except BaseException as caught:  # every ending is reported, by type alone
        error = caught
    sys.stdout.flush()
    os._exit(_report(error, result_fd))


if __name__ == "__main__":
    main()
