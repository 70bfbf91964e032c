"""repotune.manifest.verify rechecks every hash of a manifest and says what changed."""

import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repotune.manifest.stage import build_manifest, sha256_file, write_manifest
from repotune.manifest.verify import load_manifest, main, verify
from testdata.workflow import ROOT, verify_command


def small_run(tmp_path):
    """A run directory with real files: a Parquet table, a directory of files, a summary."""
    (tmp_path / "results" / "m" / "adapter").mkdir(parents=True)
    pq.write_table(pa.table({"sha": ["a", "b"]}), tmp_path / "results" / "commits.parquet")
    (tmp_path / "results" / "m" / "adapter" / "adapter_config.json").write_text('{"r": 8}\n')
    summary = tmp_path / "results" / "m" / "adapter" / "training_summary.json"
    summary.write_text('{"resolved_targets": ["c_attn"], "trainable_params": 64}\n')
    manifest = build_manifest(
        model="m",
        config={"repo": str(tmp_path)},
        roots=["results/commits.parquet", "results/m/adapter"],
        benchmarks={},
        training_summary="results/m/adapter/training_summary.json",
        eval_report=None,
        workflow_dir=ROOT,
        base=tmp_path,
    )
    path = tmp_path / "results" / "m" / "manifest.json"
    write_manifest(path, manifest)
    return path


@pytest.mark.documented("python -m repotune.manifest.verify results/tiny/manifest.json")
def test_untouched_run_verifies(tmp_path):
    path = small_run(tmp_path)
    assert verify(load_manifest(path), tmp_path) == []
    result = subprocess.run(
        verify_command(path, tmp_path), cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 3 artifacts match" in result.stdout


def test_altered_missing_and_added_files_are_reported(tmp_path):
    path = small_run(tmp_path)
    pq.write_table(pa.table({"sha": ["a", "c"]}), tmp_path / "results" / "commits.parquet")
    (tmp_path / "results" / "m" / "adapter" / "adapter_config.json").unlink()
    (tmp_path / "results" / "m" / "adapter" / "stray.bin").write_bytes(b"\0")
    changes = {(change.kind, change.path) for change in verify(load_manifest(path), tmp_path)}
    assert changes == {
        ("changed", "results/commits.parquet"),
        ("missing", "results/m/adapter/adapter_config.json"),
        ("added", "results/m/adapter/stray.bin"),
    }
    result = subprocess.run(
        verify_command(path, tmp_path), cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "changed  results/commits.parquet  (sha256 " in result.stdout
    assert "3 difference(s)" in result.stdout


def test_same_size_edit_is_caught_by_the_hash(tmp_path):
    path = small_run(tmp_path)
    config = tmp_path / "results" / "m" / "adapter" / "adapter_config.json"
    config.write_text('{"r": 9}\n')
    [change] = verify(load_manifest(path), tmp_path)
    assert (change.kind, change.path) == ("changed", "results/m/adapter/adapter_config.json")
    assert "bytes" not in change.detail


def test_unreadable_manifest_fails_in_one_line(tmp_path):
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    result = subprocess.run(verify_command(bad, tmp_path), cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("repotune error: manifest ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_command_prints_each_difference_and_a_count(tmp_path, capsys):
    path = small_run(tmp_path)
    assert main([str(path), "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"all 3 artifacts match {path}\n"
    (tmp_path / "results" / "commits.parquet").write_bytes(b"not parquet any more")
    (tmp_path / "results" / "m" / "adapter" / "adapter_config.json").unlink()
    assert main([str(path), "--root", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    [listed] = [
        e for e in load_manifest(path)["artifacts"] if e["path"] == "results/commits.parquet"
    ]
    now = sha256_file(tmp_path / "results" / "commits.parquet")
    assert lines[0] == (
        f"changed  results/commits.parquet  (sha256 {listed['sha256'][:12]} -> {now[:12]}, "
        f"{listed['bytes']} -> 20 bytes)"
    )
    assert lines[1] == "missing  results/m/adapter/adapter_config.json"
    assert lines[2] == f"2 difference(s) from {path} (3 artifacts listed)"


def test_the_command_refuses_a_manifest_it_cannot_use_in_one_line(tmp_path, capsys):
    cases = {
        "absent.json": "does not exist; run the workflow first",
        "list.json": "has no artifacts list; regenerate it",
        "no_list.json": "has no artifacts list; regenerate it",
        "binary.json": "is not JSON (",
    }
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "no_list.json").write_text('{"artifacts": {}}')
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    for name, said in cases.items():
        assert main([str(tmp_path / name)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"repotune error: manifest '{tmp_path / name}': "), error
        assert said in error and error.count("\n") == 1, error
        assert error.endswith(
            "; run the workflow first\n" if name == "absent.json" else "; regenerate it\n"
        )


def test_a_new_file_in_an_artifact_directory_is_added_but_a_missing_root_is_not(tmp_path):
    path = small_run(tmp_path)
    manifest = load_manifest(path)
    (tmp_path / "results" / "m" / "adapter" / "extra.txt").write_text("x")
    changes = verify(
        {**manifest, "artifact_roots": [*manifest["artifact_roots"], "gone/"]}, tmp_path
    )
    assert [(change.kind, change.path, change.detail) for change in changes] == [
        ("added", "results/m/adapter/extra.txt", "not in the manifest")
    ]
    assert str(changes[0]) == "added    results/m/adapter/extra.txt  (not in the manifest)"


def test_paths_are_relative_to_the_current_directory_by_default(tmp_path, monkeypatch, capsys):
    path = small_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert verify(load_manifest(path)) == []
    assert main([str(path)]) == 0
    assert capsys.readouterr().out.startswith("all 3 artifacts match")
