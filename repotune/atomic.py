"""Atomic writes: an output exists complete or not at all.

Snakemake trusts any output file that exists, and so do our own incremental caches. Every
writer therefore fills a temporary sibling and renames it into place; an interrupted job
leaves only a temporary name that nothing reads.
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _temporary_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it to ``final``.

    Works for files and directories: whatever the body creates at the yielded path replaces
    ``final`` (an existing directory at ``final`` is removed first). On an exception the
    temporary path is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(final)
    _remove(temporary)
    try:
        yield temporary
        if temporary.is_dir() and final.is_dir():
            _remove(final)
        os.replace(temporary, final)
    except BaseException:
        _remove(temporary)
        raise


def write_text(final: str | Path, text: str) -> None:
    """Write ``text`` to ``final`` atomically (UTF-8)."""
    with atomic_path(final) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
