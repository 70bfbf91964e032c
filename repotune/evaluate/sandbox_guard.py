"""The sandboxed child's first code: install the audit hook, run behaviour_test.py, report.

Run as ``python -I -B sandbox_guard.py <scratch dir>`` by :mod:`repotune.evaluate.sandbox`. It lives
in the package, not in the scratch directory, so nothing the test writes can change it; hooks
cannot be removed once added (PEP 578). Its last output line names what ended the test
(``repotune-sandbox-result: <ExceptionType>[ <refused event>]``): the parent reports that and
nothing else of the output, which the test controls.
"""

import os
import runpy
import sys

MARKER = "repotune-sandbox-result:"


class SandboxRefusal(PermissionError):
    """An operation the sandbox does not allow (``event`` is the audit event refused)."""

    def __init__(self, event):
        super().__init__(f"behaviour test sandbox: {event} is not allowed")
        self.event = event


def _install(root):
    realpath, join, isabs, isdir = os.path.realpath, os.path.join, os.path.isabs, os.path.isdir
    getcwd, fsdecode, fspath, getpid = os.getcwd, os.fsdecode, os.fspath, os.getpid
    sep = os.sep
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    processes = {
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
    }
    # Modules that reach the operating system with no audit event: _posixsubprocess.fork_exec
    # starts programs, ctypes calls any C function, dbm and readline write files.
    modules = {"_posixsubprocess", "_ctypes", "_dbm", "_gdbm", "readline", "_xxsubinterpreters"}
    # event -> (positions of path arguments, position of the dir_fd argument or None)
    paths = {
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
    # Readable: the scratch directory, Python's own library (sys.path as the guard starts, its
    # site-packages included), this process's /proc entry and harmless devices. Not the home
    # directory, not other processes' /proc entries (their environment), not /etc.
    readable = [realpath(entry) for entry in sys.path if entry and isabs(entry)]
    readable += [root, realpath(f"/proc/{getpid()}"), "/dev/null", "/dev/zero", "/dev/urandom"]
    readable += [realpath(sys.base_prefix), realpath(sys.prefix)]

    def resolve(path, dir_fd=None):
        path = fsdecode(fspath(path))
        if isabs(path):
            base = ""
        elif dir_fd is not None and dir_fd != -1:
            base = realpath(f"/proc/self/fd/{dir_fd}")
        else:
            base = getcwd()
        return realpath(join(base, path))

    def under(resolved, top):
        return resolved == top or resolved.startswith(top.rstrip(sep) + sep)

    def inside(path, dir_fd=None):
        return isinstance(path, int) or under(resolve(path, dir_fd), root)

    def may_read(path):
        if isinstance(path, int):
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
            if args[0] in modules:
                refuse(event)
        elif event == "os.kill":
            if args[0] != getpid():
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
        elif event in ("os.listdir", "os.scandir"):
            if args[0] is not None and not may_read(args[0]):
                refuse(event)
        elif event == "sqlite3.connect":
            database = fsdecode(fspath(args[0])) if not isinstance(args[0], int) else ""
            database = database.removeprefix("file:").split("?", 1)[0]
            if database not in ("", ":memory:") and not inside(database):
                refuse(event)
        elif event in paths:
            positions, dir_fd_at = paths[event]
            dir_fd = args[dir_fd_at] if dir_fd_at is not None else None
            for position in positions:
                if not inside(args[position], dir_fd):
                    refuse(event)

    sys.addaudithook(hook)


def _report(error):
    """Print the result line and return the exit status for ``error`` (None: passed)."""
    if error is None:
        return 0
    if isinstance(error, SystemExit):
        code = error.code
        if code is None or code == 0:
            return 0
        status = code if isinstance(code, int) and 0 < code < 256 else 1
    else:
        status = 1
    refused = type(error) is SandboxRefusal
    event = getattr(error, "event", "") if refused else ""
    name = "PermissionError" if refused else type(error).__name__
    sys.stdout.flush()
    os.write(1, f"\n{MARKER} {name}{' ' + event if event else ''}\n".encode())
    return status


def main() -> None:
    root = os.path.realpath(sys.argv[1])
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
    os._exit(_report(error))


if __name__ == "__main__":
    main()
