"""The base pretrained on local files (repotune.pretrain, rule pretrain_base): its corpus, its
cache, and fine-tuning on it through the local-python preset.

A very small base is built once for the module, from a handful of files written here, by the
function the rule runs (repotune.pretrain.stage.pretrain); the tokenize, train and evaluate
stages then run on top of it as the workflow runs them.
"""

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from repotune.config import resolve_config
from repotune.curate.table import SPLITS
from repotune.errors import InputError
from repotune.evaluate.stage import EvaluateRequest, evaluate
from repotune.models import PRETRAINED_BASE, resolve_model
from repotune.pretrain.corpus import blob_id, list_corpus, split_corpus
from repotune.pretrain.settings import MANIFEST, PretrainSettings, plan
from repotune.pretrain.stage import PretrainRequest, pretrain
from repotune.shards.stage import TokenizeSettings, tokenize_stage
from repotune.train.trainer import TrainRequest, train
from testdata.curated import synthetic_rows, write_curated
from testdata.gitrepo import GitRepo
from testdata.pretrain import TINY_SIZE
from testdata.workflow import all_jobs, planned_jobs, snakemake

SHARED = "def shared(x):\n    return x\n"
IN_REPOSITORY = "def helper(value):\n    return value * 2\n"


def module_text(number: int) -> str:
    """A small, regular Python module: a base learns its shape within a few steps."""
    return "".join(
        f"def f{i}_{number}(x):\n    total = x * {i}\n    return total + {number}\n\n"
        for i in range(12)
    )


def write_corpus(root: Path) -> Path:
    """Six modules in ``root/lib``, plus what the corpus must leave out: a copy of one of them,
    a copy of a file of the data repository, a binary file and an empty one."""
    lib = root / "lib"
    for number in range(6):
        path = lib / f"pkg{number % 2}" / f"mod{number}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(module_text(number))
    (lib / "pkg1" / "copy_of_mod0.py").write_text(module_text(0))
    (lib / "pkg0" / "vendored.py").write_text(IN_REPOSITORY)
    (lib / "pkg0" / "blob.py").write_bytes(b"\x00\xff\xfe binary")
    (lib / "pkg0" / "empty.py").write_text("")
    (lib / "tests").mkdir()
    (lib / "tests" / "test_mod.py").write_text(SHARED)
    (lib / "notes.txt").write_text(SHARED)
    return lib


def pretrain_config(root: Path, **size: Any) -> dict[str, Any]:
    """The resolved config of a tiny base on ``root/lib`` (through the {stdlib} placeholder,
    as the default corpus names the standard library)."""
    return resolve_config(
        {
            "pretrain": {
                "corpus": {"include": ["{stdlib}/**/*.py"], "exclude": ["{stdlib}/**/tests/**"]},
                "sizes": {"cpu": {**TINY_SIZE, **size}},
                "validation_share": 0.2,
                "cache_dir": str(root / "cache"),
            },
            "train": {"logging_steps": 2},
        }
    )


def request_for(root: Path, repo: Path, config: dict[str, Any]) -> PretrainRequest:
    return PretrainRequest(
        settings=PretrainSettings.from_config(config["pretrain"], config["train"]),
        repo=str(repo),
        places={"stdlib": str(root / "lib"), "site_packages": str(root / "site")},
        model_dir=str(root / PRETRAINED_BASE),
        manifest=str(root / Path(PRETRAINED_BASE).parent / MANIFEST),
        cache_dir=config["pretrain"]["cache_dir"],
    )


@dataclass(frozen=True)
class Sources:
    """``root/lib``, the corpus written by :func:`write_corpus`, and ``root/data``, the data
    repository (one of its files is copied into the corpus)."""

    root: Path
    repo: GitRepo

    @property
    def places(self) -> dict[str, str]:
        return {"stdlib": str(self.root / "lib"), "site_packages": str(self.root / "site")}

    def settings(self, **size: Any) -> PretrainSettings:
        config = pretrain_config(self.root, **size)
        return PretrainSettings.from_config(config["pretrain"], config["train"])


@dataclass(frozen=True)
class Built:
    sources: Sources
    manifest: dict[str, Any]

    @property
    def root(self) -> Path:
        return self.sources.root

    @property
    def model(self) -> Path:
        return self.root / PRETRAINED_BASE


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    root = tmp_path_factory.mktemp("pretrain")
    repo = GitRepo(root / "data")
    repo.commit("Add the helper", {"util.py": IN_REPOSITORY})
    write_corpus(root)
    return Sources(root, repo)


@pytest.fixture(scope="module")
def built(sources: Sources) -> Built:
    """The tiny base, built by the function the rule runs."""
    config = pretrain_config(sources.root)
    return Built(sources, pretrain(request_for(sources.root, sources.repo.path, config)))


def test_corpus_takes_each_text_file_once_and_nothing_of_the_data_repository(sources):
    settings = sources.settings()
    corpus = list_corpus(settings.corpus, sources.repo.path, sources.places)
    names = [item.name for item in corpus.files]
    assert names == sorted(f"stdlib/pkg{n % 2}/mod{n}.py" for n in range(6))
    assert corpus.summary()["skipped"] == {
        "too_large": 0, "empty": 1, "not_text": 1, "duplicate": 1, "data_repository": 1,
    }  # fmt: skip
    assert corpus.bytes == sum(len(module_text(n).encode()) for n in range(6))
    assert {item.sha for item in corpus.files} == {
        blob_id(module_text(n).encode()) for n in range(6)
    }
    without_repository = list_corpus(settings.corpus, None, sources.places)
    assert "stdlib/pkg0/vendored.py" in [item.name for item in without_repository.files]


def test_files_of_two_patterns_under_one_placeholder_keep_their_own_names(sources, tmp_path):
    """Names are relative to the placeholder's directory, not to where each glob starts:
    ``{stdlib}/json/*.py`` and ``{stdlib}/curses/*.py`` both match an ``__init__.py``, and the
    two files stay two (both were named ``stdlib/__init__.py``, and one was silently dropped)."""
    for package in ("json", "curses"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"NAME = {package!r}\n")
    settings = dict(sources.settings().corpus)
    settings["include"] = ["{stdlib}/json/*.py", "{stdlib}/curses/*.py"]
    places = {"stdlib": str(tmp_path), "site_packages": str(tmp_path / "site")}
    corpus = list_corpus(settings, None, places)
    assert [item.name for item in corpus.files] == [
        "stdlib/curses/__init__.py",
        "stdlib/json/__init__.py",
    ]


def test_two_files_that_would_share_a_name_are_one_clear_error(sources, tmp_path):
    """Two directories outside the placeholders with the same last name: their files would
    share names (``src/x.py``); the listing refuses in one line naming both paths."""
    for side in ("a", "b"):
        (tmp_path / side / "src").mkdir(parents=True)
        (tmp_path / side / "src" / "x.py").write_text(f"SIDE = {side!r}\n")
    settings = dict(sources.settings().corpus)
    settings["include"] = [f"{tmp_path}/a/src/*.py", f"{tmp_path}/b/src/*.py"]
    with pytest.raises(InputError, match=r"src/x\.py") as error:
        list_corpus(settings, None, sources.places)
    assert str(tmp_path / "a" / "src" / "x.py") in str(error.value)
    assert str(tmp_path / "b" / "src" / "x.py") in str(error.value)


def test_the_key_follows_the_files_contents_not_where_they_lie(sources, tmp_path):
    settings = sources.settings()
    repo = str(sources.repo.path)
    key = plan(settings, repo, sources.places)[1]
    shutil.copytree(sources.root / "lib", tmp_path / "lib")
    moved = {"stdlib": str(tmp_path / "lib"), "site_packages": str(tmp_path / "site")}
    assert plan(settings, repo, moved)[1] == key
    assert plan(sources.settings(learning_rate=0.02), repo, moved)[1] != key
    (tmp_path / "lib" / "pkg0" / "mod0.py").write_text(module_text(0) + "# edited\n")
    assert plan(settings, repo, moved)[1] != key


def test_split_is_seeded_by_content_and_respects_the_byte_budget(sources):
    files = list_corpus(sources.settings().corpus, None, sources.places).files
    first = split_corpus(files, seed=0, validation_share=0.2, max_bytes=1000)
    assert first == split_corpus(list(reversed(files)), 0, 0.2, 1000)
    used = first["train"] + first["validation"]
    assert len(first["validation"]) >= 1 and len(first["train"]) >= 1
    assert sum(item.bytes for item in used) <= 1000 or len(first["train"]) == 1
    assert first["unused"] and not set(first["unused"]) & set(used)
    whole = split_corpus(files, seed=0, validation_share=0.2, max_bytes=0)
    assert not whole["unused"] and len(whole["train"] + whole["validation"]) == len(files)
    other = split_corpus(files, seed=1, validation_share=0.2, max_bytes=0)
    assert [f.sha for f in other["train"]] != [f.sha for f in whole["train"]]


@pytest.mark.slow
def test_manifest_records_corpus_tokens_seen_loss_curve_and_wall_time(built):
    manifest = built.manifest
    corpus = manifest["corpus"]
    assert [item["name"] for item in corpus["files"]] == sorted(
        f"stdlib/pkg{n % 2}/mod{n}.py" for n in range(6)
    )
    assert corpus["skipped"]["data_repository"] == 1
    splits = corpus["splits"]
    assert splits["train"]["files"] + splits["validation"]["files"] == 6
    assert splits["train"]["tokens"] > 0 and splits["validation"]["tokens"] > 0
    training, curve = manifest["training"], manifest["loss_curve"]
    assert training["steps"] == TINY_SIZE["max_steps"]
    assert curve[-1]["step"] == TINY_SIZE["max_steps"]
    assert curve[-1]["tokens"] == training["tokens"] > 0
    assert [row["step"] for row in curve if row["val_loss"] is not None] == [4, 8]
    # It learnt: a random model's loss is about ln(vocabulary).
    assert curve[-1]["val_loss"] < math.log(manifest["model"]["vocab_size"]) - 1
    assert manifest["wall_seconds"]["this_run"] > 0
    assert manifest["cache"]["hit"] is False
    written = json.loads((built.root / Path(PRETRAINED_BASE).parent / MANIFEST).read_text())
    assert written == manifest


@pytest.mark.slow
def test_a_second_build_is_a_cache_hit(built, tmp_path):
    request = request_for(built.root, built.sources.repo.path, pretrain_config(built.root))
    request = PretrainRequest(**{**request.__dict__, "model_dir": str(tmp_path / "model"),
                                 "manifest": str(tmp_path / "model.json")})  # fmt: skip
    again = pretrain(request)
    assert again["cache"]["hit"] is True and again["cache"]["key"] == built.manifest["cache"]["key"]
    entry = Path(again["cache"]["entry"])
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # no work left
    weights = "model.safetensors"
    assert (tmp_path / "model" / weights).read_bytes() == (built.model / weights).read_bytes()


@pytest.mark.slow
def test_the_local_python_preset_trains_and_evaluates_on_the_base(built, monkeypatch):
    monkeypatch.chdir(built.root)  # the preset names the base relative to the run directory
    schedule = {"max_steps": 3, "batch_size": 2, "eval_interval": 0, "eval_max_blocks": 4}
    entry = {"preset": "local-python", "tokenize": {"seq_len": 64}, "train": schedule}
    spec = resolve_model(entry)
    assert spec.base == PRETRAINED_BASE and spec.tokenizer == PRETRAINED_BASE
    config = resolve_config(
        {
            "evaluate": {
                "perplexity": {"max_blocks": 4},
                "commit_messages": {"samples": 2, "max_new_tokens": 4},
                "code_changes": {"samples": 2, "max_new_tokens": 4},
                "behaviour": {"tests": None},
                "examples": 1,
            }
        }
    )
    splits = write_curated(
        "dataset",
        synthetic_rows(12, seed=1, split="train")
        + synthetic_rows(3, seed=2, split="validation")
        + synthetic_rows(3, seed=3, split="test"),
    )
    out = Path("results/local-python")
    stats = tokenize_stage(
        splits=splits, tokenizer_dir=out / "tokenizer",
        shard_dirs={split: out / "shards" / split for split in SPLITS},
        stats_path=out / "shards/stats.json",
        settings=TokenizeSettings.for_model(config["tokenize"], spec), model=spec,
    )  # fmt: skip
    assert not stats["tokenizer"]["trained"]  # the base's own tokenizer
    assert stats["tokenizer"]["vocab_size"] == built.manifest["model"]["vocab_size"]
    summary = train(
        TrainRequest(
            model=entry, shards_dir=str(out / "shards"), tokenizer_dir=str(out / "tokenizer"),
            adapter_dir=str(out / "adapter"), base_dir=str(out / "base"),
            state_dir=str(out / "train_state"), settings=config["train"],
        )
    )  # fmt: skip
    assert summary["base_model"] == PRETRAINED_BASE and summary["trained_in_full"] == []
    report = evaluate(
        EvaluateRequest(
            model="local-python", adapter_dir=str(out / "adapter"), base_dir=str(out / "base"),
            tokenizer_dir=str(out / "tokenizer"), test_shards=str(out / "shards/test"),
            shard_stats=str(out / "shards/stats.json"), test_commits=str(splits["test"]),
            behaviour_tests=None, report_json=str(out / "eval/report.json"),
            report_md=str(out / "eval/report.md"), generations=str(out / "eval/gen.jsonl"),
            loss_plot=str(out / "eval/loss.png"), metrics_plot=str(out / "eval/metrics.png"),
            settings=config["evaluate"], redact=config["curate"]["redact"],
        )
    )  # fmt: skip
    assert report["base"]["source"] == "pretrained" and report["base_model"] == PRETRAINED_BASE
    assert report["samples"]["commit_messages"] == 2
    # The base learnt code: on commits it never saw it beats a uniform guess over its vocabulary.
    bits = report["perplexity"]["base"]["bits_per_token"]
    assert bits < math.log2(built.manifest["model"]["vocab_size"])


@pytest.mark.slow
def test_the_workflow_builds_the_base_first_for_a_model_on_it(sources, tmp_path):
    config = {
        "repo": str(sources.repo.path),
        "models": ["local-python"],
        "pretrain": {"corpus": {"include": [str(sources.root / "lib/**/*.py")]},
                     "cache_dir": str(tmp_path / "cache")},
    }  # fmt: skip
    jobs = planned_jobs(snakemake(tmp_path, "--dry-run", config=config))
    assert jobs == all_jobs() | {"pretrain_base": 1}
