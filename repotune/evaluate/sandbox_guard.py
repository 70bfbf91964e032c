"""The sandboxed child's first code: install the audit hook, then run behaviour_test.py.

Run as ``python -I -B sandbox_guard.py <scratch dir>`` by :mod:`repotune.evaluate.sandbox`. It lives
in the package, not in the scratch directory, so nothing the test writes can change it; hooks
cannot be removed once added (PEP 578).
"""

import os
import runpy
import sys


def _install(root):
    realpath, join, isabs, isdir = os.path.realpath, os.path.join, os.path.isabs, os.path.isdir
    getcwd, fsdecode, fspath, getpid = os.getcwd, os.fsdecode, os.fspath, os.getpid
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
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.call_function",
        "ctypes.cdata",
    }
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

    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True
        path = fsdecode(fspath(path))
        if isabs(path):
            base = ""
        elif dir_fd is not None and dir_fd != -1:
            base = realpath(f"/proc/self/fd/{dir_fd}")
        else:
            base = getcwd()
        resolved = realpath(join(base, path))
        return resolved == root or resolved.startswith(root + os.sep)

    def refuse(event, args):
        raise PermissionError(f"behaviour test sandbox: {event}{args!r} is not allowed")

    # The hook calls nothing that raises audit events itself (realpath, getcwd and isdir
    # only stat and readlink), so it needs no re-entrancy guard, which threads could race.
    def hook(event, args):
        if (event.startswith("socket.") and event != "socket.__new__") or event in processes:
            refuse(event, args)
        elif event == "os.kill":
            if args[0] != getpid():
                refuse(event, args)
        elif event == "open":
            path, mode, flags = args
            # Writing outside, or opening a directory outside as an fd that later
            # dir_fd-relative calls (whose open event omits the dir_fd) could write into.
            if not inside(path) and (flags & writing or (mode is None and isdir(path))):
                refuse(event, args)
        elif event in paths:
            positions, dir_fd_at = paths[event]
            dir_fd = args[dir_fd_at] if dir_fd_at is not None else None
            for position in positions:
                if not inside(args[position], dir_fd):
                    refuse(event, args)

    sys.addaudithook(hook)


def main() -> None:
    root = os.path.realpath(sys.argv[1])
    sys.path.insert(0, root)
    sys.argv = ["behaviour_test.py"]
    _install(root)
    runpy.run_path(os.path.join(root, "behaviour_test.py"), run_name="__main__")


if __name__ == "__main__":
    main()
