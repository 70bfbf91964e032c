"""Atomic writes: an output exists complete or not at all, also after a crash or power loss.

Snakemake trusts any output file that exists, and so do our own incremental caches. Every
writer therefore fills a temporary path and renames it into place:

* the temporary path lies in a hidden holder directory made by ``mkdtemp`` beside the output
  (``.name.tmp-<random>/name``): unique across processes and cluster nodes, keeping the
  output's own name (and suffix), and ignored by the manifest like every hidden name;
* on commit, every file and directory written gets the permissions a plain write gives (0666,
  0777 for directories and executables, less the umask): writers that fill a temporary file
  of their own and rename it (safetensors, ``mkstemp``) leave it 0600, which another user
  (a model server, a teammate sharing the results) could not read;
* then every file and directory written is ``fsync``-ed before the rename and the parent
  directory after it, so after a power loss the output is either the old one or the new one,
  complete;
* an existing directory is replaced by an atomic exchange (``renameat2(RENAME_EXCHANGE)`` on
  Linux) and the old copy removed afterwards, so no reader ever sees it half deleted; where the
  exchange is unavailable the old directory is renamed aside first (a moment without it,
  never a partial one).

An interrupted job leaves only a hidden holder directory that nothing reads.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path for ``final``; on success it replaces ``final``, durably.

    Works for files and directories: whatever the body creates at the yielded path replaces
    ``final``. On an exception the temporary path is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    temporary = holder / final.name
    try:
        yield temporary
        _plain_permissions(temporary)
        _fsync_tree(temporary)
        if temporary.is_dir() and final.is_dir() and not final.is_symlink():
            _replace_directory(temporary, final)
        else:
            os.replace(temporary, final)
        _fsync_directory(final.parent)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def write_text(final: str | Path, text: str) -> None:
    """Write ``text`` to ``final`` atomically (UTF-8)."""
    with atomic_path(final) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _replace_directory(new: Path, final: Path) -> None:
    """Put directory ``new`` at ``final``, whose old content ends up at ``new`` (then removed
    with the holder)."""
    if _exchange(new, final):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    try:
        os.replace(final, aside / final.name)
        os.replace(new, final)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


@functools.cache
def _renameat2() -> object | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    function = getattr(ctypes.CDLL(name, use_errno=True), "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        function.argtypes += [ctypes.c_uint]
    return function


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False where the system or file system cannot."""
    function = _renameat2()
    if function is None:
        return False
    status = function(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    return status == 0


def current_umask() -> int:
    """The process's umask, read from /proc where there is one (setting it to read it would
    race with other threads' file creation)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_permissions(path: Path) -> None:
    """Give ``path`` (a file, or a directory and everything under it) the modes a plain write
    under the umask gives; symbolic links are left alone."""
    if path.is_symlink() or not path.exists():
        return
    mask = current_umask()
    entries = [path]
    if path.is_dir():
        for root, directories, files in os.walk(path):
            entries += [Path(root) / name for name in (*directories, *files)]
    for entry in entries:
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        mode = stat.S_IMODE(info.st_mode)
        full = 0o777 if stat.S_ISDIR(info.st_mode) or mode & 0o111 else 0o666
        if mode != full & ~mask:
            os.chmod(entry, full & ~mask)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory under a directory (itself included)."""
    if path.is_symlink() or not path.exists():
        return
    if path.is_dir():
        for root, _, files in os.walk(path):
            for name in files:
                _fsync_file(Path(root) / name)
            _fsync_directory(Path(root))
    else:
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    if path.is_symlink():
        return
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where directories cannot be
    opened, as on Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
