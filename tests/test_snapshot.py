"""The snapshot stage: the files at the train cutoff, filtered, deduplicated and redacted."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from repotune.snapshot.blobs import list_tree, read_blobs
from repotune.snapshot.languages import language
from repotune.snapshot.neardup import NearDuplicates
from testdata.gitrepo import GitRepo
from testdata.workflow import snakemake

APP = "\n".join(
    [
        "import json",
        "",
        "",
        "def load_settings(path):",
        '    """Read the settings file and fill in the defaults."""',
        "    with open(path) as handle:",
        "        values = json.load(handle)",
        "    values.setdefault('retries', 3)",
        "    values.setdefault('timeout', 30)",
        "    return values",
        "",
        "",
        "def connect(settings, client_factory, logger):",
        "    client = client_factory(settings['host'], settings['port'])",
        "    logger.info('connected to %s on port %d', settings['host'], settings['port'])",
        "    for attempt in range(settings['retries']):",
        "        if client.ping(timeout=settings['timeout']):",
        "            return client",
        "        logger.warning('ping %d of %d failed', attempt + 1, settings['retries'])",
        "    raise ConnectionError(settings['host'])",
        "",
    ]
)
SECRET = "AKIA" + "Q3EGRWSAFRT6YH2Z"  # an AWS access key id shape, made up


def history(path: Path) -> dict[str, str]:
    """Two training commits, then a validation and a test commit that must not leak in."""
    repo = GitRepo(path)
    shas = {}
    shas["first"] = repo.commit(
        "Add the settings loader and its friends",
        {
            "src/app.py": APP,
            "src/copy_of_app.py": APP,  # the same blob at a second path
            "src/near_app.py": APP.replace("retries', 3", "retries', 5"),  # one token differs
            "src/keys.py": f'AWS_KEY_ID = "{SECRET}"\n',
            "package-lock.json": '{"lockfileVersion": 3}\n',
            "vendor/lib.js": "export const lib = 1;\n",
            "assets/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
            "data/big.csv": "a,b\n" * 1000,
            "README.md": "# Service\n\nFirst version.\n",
        },
    )
    (path / "docs").mkdir()
    (path / "docs" / "link.md").symlink_to("../README.md")
    shas["cutoff"] = repo.commit(
        "Describe the service in the readme", {"README.md": "# Service\n\nSecond version.\n"}
    )
    shas["validation"] = repo.commit(
        "Retry with backoff in connect", {"src/app.py": APP + "# FUTURE_VALIDATION_MARKER\n"}
    )
    shas["test"] = repo.commit(
        "Add the health check endpoint", {"src/health.py": "# FUTURE_TEST_MARKER\n"}
    )
    return shas


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The workflow's snapshot target on the fixture history: extract, curate, snapshot."""
    base = tmp_path_factory.mktemp("snapshot")
    shas = history(base / "repo")
    workdir = base / "run"
    workdir.mkdir()
    config = {
        "repo": str(base / "repo"),
        "curate": {"split": {"test_size": 1, "validation_size": 1}},
        "snapshot": {"max_file_bytes": 2000},
    }
    result = snakemake(workdir, "results/snapshot/snapshot.json", config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, shas


@pytest.mark.slow
def test_snapshot_is_the_tree_of_the_newest_training_commit(snapshot_run):
    workdir, shas = snapshot_run
    report = json.loads((workdir / "results/snapshot/snapshot.json").read_text())
    assert report["cutoff"]["sha"] == shas["cutoff"]
    table = pq.read_table(workdir / "results/snapshot/files.parquet")
    assert table.schema.metadata[b"repotune.snapshot.cutoff"] == shas["cutoff"].encode()
    rows = {row["path"]: row for row in table.to_pylist()}
    assert rows["README.md"]["content"] == "# Service\n\nSecond version.\n"
    assert rows["src/app.py"]["content"] == APP
    everything = "".join(row["content"] for row in rows.values())
    assert "FUTURE_VALIDATION_MARKER" not in everything
    assert "FUTURE_TEST_MARKER" not in everything
    assert "src/health.py" not in rows


@pytest.mark.slow
def test_each_filter_drops_its_files_and_counts_them(snapshot_run):
    workdir, _ = snapshot_run
    report = json.loads((workdir / "results/snapshot/snapshot.json").read_text())
    filters = report["filters"]
    assert filters["generated"] == {"files": 2, "examples": ["package-lock.json", "vendor/lib.js"]}
    assert filters["oversized"] == {"files": 1, "examples": ["data/big.csv"]}
    assert filters["binary"] == {"files": 1, "examples": ["assets/logo.png"]}
    assert filters["exact_duplicates"] == {"files": 1, "examples": ["src/copy_of_app.py"]}
    assert filters["near_duplicates"] == {"files": 1, "examples": ["src/near_app.py"]}
    assert report["not_regular_files"] == {"symlinks": 1, "submodules": 0}
    paths = pq.read_table(workdir / "results/snapshot/files.parquet").column("path").to_pylist()
    assert paths == ["README.md", "src/app.py", "src/keys.py"]
    assert report["kept_files"] == 3
    assert report["files_in_tree"] == 9  # regular files; the symlink is counted apart


@pytest.mark.slow
def test_secrets_in_files_are_redacted_like_commits(snapshot_run):
    workdir, _ = snapshot_run
    table = pq.read_table(workdir / "results/snapshot/files.parquet").to_pylist()
    keys = next(row for row in table if row["path"] == "src/keys.py")
    assert SECRET not in keys["content"]
    assert keys["content"] == 'AWS_KEY_ID = "<KEY>"\n'
    assert keys["size"] == len(f'AWS_KEY_ID = "{SECRET}"\n')
    report = json.loads((workdir / "results/snapshot/snapshot.json").read_text())
    assert report["redactions"]["aws_access_key"] == 1  # the one key in src/keys.py


def test_blobs_stream_in_order_and_equal_git_show(tmp_path):
    shas = history(tmp_path / "repo")
    tree = list_tree(tmp_path / "repo", shas["cutoff"])
    read = list(read_blobs(tmp_path / "repo", [entry.blob_sha for entry in tree.files]))
    assert [sha for sha, _ in read] == [entry.blob_sha for entry in tree.files]
    assert [len(content) for _, content in read] == [entry.size for entry in tree.files]
    readme = next(i for i, entry in enumerate(tree.files) if entry.path == "README.md")
    assert read[readme][1] == b"# Service\n\nSecond version.\n"


def test_near_duplicates_catch_small_edits_and_keep_different_files():
    near = NearDuplicates(threshold=0.85)
    assert not near.is_duplicate(APP)
    assert near.is_duplicate(APP.replace("retries', 3", "retries', 5"))
    other = "\n".join(
        f"def handler_{i}(request):\n    return respond({i}, request)" for i in range(30)
    )
    assert not near.is_duplicate(other)
    assert not near.is_duplicate("x = 1")  # too short for a 5-gram: never a duplicate


def test_languages_by_name_and_extension():
    assert language("src/app.py") == "python"
    assert language("web/App.TSX") == "typescript"
    assert language("Makefile") == "makefile"
    assert language("notes/unknown.xyz") == "text"


def test_minhash_estimates_the_jaccard_similarity_of_5_gram_sets():
    """The share of equal signature entries tracks the true Jaccard similarity (a degenerate
    hash family, where every permutation picks the same shingle, gives 0 or 1 instead)."""
    near = NearDuplicates(threshold=0.85)
    words = [f"name{i % 37} value{i % 11} call{i}" for i in range(120)]
    base = " ".join(words)
    errors = []
    for changed in (1, 3, 6, 12, 24):
        edited = list(words)
        for position in range(0, 120, 120 // changed):
            edited[position] = f"edited{position}"
        other = " ".join(edited)
        shingles = []
        for text in (base, other):
            tokens = text.split()
            shingles.append({" ".join(tokens[i : i + 5]) for i in range(len(tokens) - 4)})
        truth = len(shingles[0] & shingles[1]) / len(shingles[0] | shingles[1])
        estimate = float((near.signature(base) == near.signature(other)).mean())
        errors.append(abs(estimate - truth))
    assert max(errors) < 0.15
    assert sum(errors) / len(errors) < 0.07


def test_fim_tasks_mask_an_added_run_in_the_post_image(tmp_path):
    from repotune.config import resolve_config
    from repotune.curate.filters import CommitFilter, FilterSettings
    from repotune.curate.redact import Redactor, RedactSettings
    from repotune.evaluate.fim import parses_in_file, score_fim
    from repotune.evaluate.fim_tasks import added_runs, fim_tasks
    from repotune.extract.stage import ExtractSettings, extract_to_parquet

    repo = GitRepo(tmp_path / "repo")
    repo.commit("Add the loader module here", {"src/app.py": APP})
    edited = APP.replace(
        "    values.setdefault('timeout', 30)\n",
        "    values.setdefault('timeout', 30)\n    values.setdefault('backoff', 2.0)\n"
        "    values.setdefault('jitter', 0.1)\n",
    )
    sha = repo.commit("Add backoff and jitter settings", {"src/app.py": edited})
    config = resolve_config()
    out = tmp_path / "out"
    out.mkdir()
    extract_to_parquet(
        repo.path,
        sha,
        out / "c.parquet",
        out / "s.json",
        out / "cache.parquet",
        ExtractSettings.from_config(config["extract"]),
        threads=1,
    )
    commits = [row for row in pq.read_table(out / "c.parquet").to_pylist() if row["sha"] == sha]
    patch = commits[0]["files"][0]["patch"]
    assert added_runs(patch) == [(10, 12)]  # post-image lines 10 and 11
    tasks = fim_tasks(
        repo.path,
        commits,
        CommitFilter(FilterSettings.from_config(config["curate"]["filters"])),
        Redactor(RedactSettings.from_config(config["curate"]["redact"])),
        seed=0,
        max_file_bytes=100_000,
    ).tasks
    assert len(tasks) == 1
    task = tasks[0]
    assert (
        task.middle
        == "    values.setdefault('backoff', 2.0)\n    values.setdefault('jitter', 0.1)\n"
    )
    assert task.prefix + task.middle + task.suffix == edited
    # the file parses with the gap left empty, so `parses` cannot tell here (n/a); the
    # parse rate over every Python question (report.json's fim facts) still sees the file
    assert score_fim(task, task.middle) == {
        "exact_match": 1.0,
        "edit_similarity": 1.0,
        "parses": None,
    }
    broken = "    values.setdefault('backoff',\n"
    assert score_fim(task, broken)["exact_match"] == 0.0
    assert parses_in_file(task, task.middle) is True and parses_in_file(task, broken) is False
    assert 0 < score_fim(task, broken)["edit_similarity"] < 1
