"""Atomic writes: unique hidden temporary names, durable commits, no half-deleted directory."""

import os
from pathlib import Path

import numpy
import pytest
from safetensors.numpy import save_file

from repotune import atomic
from repotune.atomic import atomic_path, write_text


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


def test_temporary_paths_are_unique_hidden_and_keep_the_name(tmp_path):
    final = tmp_path / "report.json"
    with atomic_path(final) as first, atomic_path(final) as second:
        assert first != second and first.name == second.name == "report.json"
        assert first.parent.parent == tmp_path and first.parent.name.startswith(".report.json.tmp-")
        first.write_text("first")
        second.write_text("second")
    assert final.read_text() == "first"  # the last to commit wins, whole
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_output_and_no_temporary(tmp_path):
    final = tmp_path / "out.txt"
    write_text(final, "old")
    with pytest.raises(RuntimeError), atomic_path(final) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert final.read_text() == "old" and leftovers(tmp_path) == []


def test_commit_fsyncs_the_file_and_the_directory(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    final = tmp_path / "out" / "data.bin"
    write_text(final, "x")
    # The file is synced before the rename (at its temporary path), the directory after it.
    assert synced[0].endswith("/data.bin") and ".data.bin.tmp-" in synced[0]
    assert synced[-1] == str(tmp_path / "out")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_a_directory_is_replaced_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda first, second: False)
    elif atomic._renameat2() is None:
        pytest.skip("this C library has no renameat2")
    final = tmp_path / "shards"
    final.mkdir()
    (final / "old.arrow").write_text("old")
    removed_while_missing: list[bool] = []
    real_rmtree = atomic.shutil.rmtree

    def rmtree(path, *args, **kwargs):
        # Whatever is removed, the output is there and already complete.
        removed_while_missing.append(not (final / "new.arrow").exists())
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(atomic.shutil, "rmtree", rmtree)
    with atomic_path(final) as temporary:
        temporary.mkdir()
        (temporary / "new.arrow").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.arrow"]
    assert removed_while_missing and not any(removed_while_missing)
    assert leftovers(tmp_path) == []


@pytest.fixture
def umask():
    """Set the process umask for a test, restored after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize(
    ("mask", "file", "executable"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_outputs_get_the_modes_a_plain_write_gives(tmp_path, umask, mask, file, executable):
    """safetensors writes a temporary file of its own (mode 0600) and renames it: through
    atomic_path its output is readable as every other output is, under the umask."""
    umask(mask)
    final = tmp_path / "merged"
    with atomic_path(final) as temporary:
        temporary.mkdir()
        save_file({"weight": numpy.zeros(2)}, str(temporary / "model.safetensors"))
        (temporary / "config.json").write_text("{}")
        (temporary / "nested").mkdir(mode=0o700)
        script = temporary / "nested" / "run.sh"
        script.write_text("#!/bin/sh\n")
        script.chmod(0o700)
    modes = {
        path.relative_to(final).as_posix(): path.stat().st_mode & 0o777
        for path in (final, *final.rglob("*"))
    }
    assert modes == {
        ".": executable, "model.safetensors": file, "config.json": file,
        "nested": executable, "nested/run.sh": executable,
    }  # fmt: skip
    assert atomic.current_umask() == mask
