"""The manifest: what produced a model, and a hash of everything that run produced.

``results/{model}/manifest.json`` lets a person (or ``python -m repotune.manifest.verify``)
answer, long after the run: which config, which workflow commit, which data commit, which
library versions and which machine made these files, how long each stage took, what the
evaluation said, and whether the files on disk are still the ones the run wrote.

Reproducibility contract. On CPU, two runs from scratch with the same config, data commit and
library versions give byte-identical artifacts, except the files in :data:`VOLATILE`: they
record wall time, throughput or free memory, which no seed fixes. On CUDA the numerics are not
bit-identical (cuBLAS/cuDNN kernel choice, atomics in backward passes, bitsandbytes
dequantisation), so the adapter weights and the evaluation report may differ in their last
bits between runs; the manifest records which case applies under ``reproducibility``.
"""

import csv
import hashlib
import json
import logging
import os
import platform
from collections.abc import Iterable
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from importlib import metadata
from pathlib import Path
from typing import Any

from repotune.atomic import write_text
from repotune.progress import Progress

MANIFEST_VERSION = 1

# Files that legitimately differ between two identical runs, with the values that make them
# differ. Patterns are matched against the artifact's path relative to the run directory.
VOLATILE: dict[str, str] = {
    "results/commits.stats.json": "wall_seconds, commits_per_second",
    "results/*/shards/stats.json": "wall_seconds, tokens_per_second",
    "results/*/adapter/training_log.csv": "tokens_per_s, peak_memory_mb per logged step",
    "results/*/adapter/training_summary.json": (
        "tokens_per_s, train_seconds, hardware.memory_bytes (free RAM at start)"
    ),
    "results/*/adapter/README.md": "the model card's tokens per second",
    "results/*/eval/report.json": "seconds and tokens_per_s of each measurement, training speed",
    "results/*/eval/report.md": "the same speeds, as tables",
    # The base pretrained here (rule pretrain_base), for a model on it: the same timings, and
    # whether the base came from the cache.
    "results/pretrained/model.json": "wall_seconds, cache.hit and cache.seconds, speeds",
    "results/pretrained/model/training_log.csv": "tokens_per_s, peak_memory_mb per logged step",
    "results/pretrained/model/training_summary.json": (
        "tokens_per_s, train_seconds, hardware.memory_bytes (free RAM at start)"
    ),
    "results/pretrained/model/README.md": "the model card's tokens per second",
}

# Distributions whose versions decide the bytes of the artifacts (import name -> dist name).
PACKAGES: dict[str, str] = {
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "peft": "peft",
    "bitsandbytes": "bitsandbytes",
    "accelerate": "accelerate",
    "datasets": "datasets",
    "pyarrow": "pyarrow",
    "numpy": "numpy",
    "gitpython": "GitPython",
    "snakemake": "snakemake",
}

BIT_IDENTICAL_NOTE = {
    "cpu": (
        "CPU run: the same config, data commit and versions reproduce every artifact byte for "
        "byte, except the volatile files listed here (wall time, throughput, free memory)."
    ),
    "cuda": (
        "CUDA run: GPU kernels (cuBLAS/cuDNN algorithm choice, atomic adds in backward passes, "
        "bitsandbytes) are not bit-reproducible, so adapter weights, training logs and "
        "evaluation metrics may differ in their last bits between runs; data, tokenizer and "
        "shards are still byte-identical."
    ),
}

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks so multi-GB shards need no RAM."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def volatile_reason(relative: str) -> str | None:
    """The values that make ``relative`` differ between identical runs, or None if it must not."""
    for pattern, reason in VOLATILE.items():
        if fnmatchcase(relative, pattern):
            return reason
    return None


def artifact_files(roots: Iterable[str | Path], base: Path) -> list[str]:
    """Every file under ``roots`` (files or directories), relative to ``base``, sorted.

    Hidden names are skipped: they are temporary siblings of an atomic write
    (``.name.tmp-<random>/``) that an interrupted job left behind, never part of the result.
    """
    found: set[str] = set()
    for root in roots:
        path = base / root
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for candidate in candidates:
            relative = candidate.relative_to(base)
            if candidate.is_file() and not any(part.startswith(".") for part in relative.parts):
                found.add(relative.as_posix())
    return sorted(found)


def describe_artifact(relative: str, base: Path) -> dict[str, Any]:
    """Path, size and sha256 of one artifact, plus why it is volatile where it is."""
    path = base / relative
    entry: dict[str, Any] = {
        "path": relative,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    reason = volatile_reason(relative)
    if reason is not None:
        entry["volatile"] = reason
    return entry


def describe_artifacts(files: list[str], base: Path) -> list[dict[str, Any]]:
    """Every artifact described; hashing reports progress by bytes (shards run to GBs)."""
    total = sum((base / relative).stat().st_size for relative in files)
    progress = Progress(logging.getLogger(__name__), "manifest: sha256", total, "bytes")
    described = []
    for relative in files:
        described.append(describe_artifact(relative, base))
        progress.advance(described[-1]["bytes"])
    progress.finish()
    return described


def package_versions() -> dict[str, str | None]:
    """Python, the libraries that shape the artifacts, and the CUDA torch was built for.

    These are the versions of the environment the manifest job runs in, which under
    ``--use-conda`` is envs/manifest.yaml: the same pins as the training environment.
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, distribution in PACKAGES.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import torch

        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = (
            str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None
        )
    except ImportError:
        versions["cuda"] = versions["cudnn"] = None
    return versions


def machine() -> dict[str, Any]:
    """The host: OS, CPU, cores, total RAM and each visible GPU."""
    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "gpus": [],
    }
    try:
        import torch

        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                properties = torch.cuda.get_device_properties(index)
                facts["gpus"].append(
                    {
                        "name": properties.name,
                        "memory_bytes": int(properties.total_memory),
                        "compute_capability": f"{properties.major}.{properties.minor}",
                    }
                )
    except ImportError:
        pass
    return facts


def git_state(directory: str | Path) -> dict[str, Any]:
    """The commit a directory's work tree is at and whether it has uncommitted changes.

    ``sha`` and ``dirty`` are None when the directory is not in a git work tree (an unpacked
    release, a copied workflow): the manifest says so rather than failing.
    """
    import git

    try:
        handle = git.Repo(directory, search_parent_directories=True)
        return {
            "path": str(Path(directory).resolve()),
            "sha": handle.head.commit.hexsha,
            "dirty": handle.is_dirty(untracked_files=True),
        }
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return {"path": str(Path(directory).resolve()), "sha": None, "dirty": None}


def read_benchmark(path: str | Path) -> dict[str, Any] | None:
    """Wall time and peak memory from a Snakemake ``benchmark:`` TSV, or None if it is missing.

    Columns used: ``s`` (wall seconds), ``max_rss`` (peak resident MB), ``cpu_time``; "NA"
    (a job too short to sample) becomes None. Several rows (``repeat``) give the mean time and
    the largest peak.
    """
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        return None

    def column(name: str) -> list[float]:
        values = []
        for row in rows:
            try:
                values.append(float(row.get(name, "NA")))
            except ValueError:
                continue
        return values

    seconds, rss, cpu = column("s"), column("max_rss"), column("cpu_time")
    return {
        "benchmark": path.as_posix(),
        "wall_seconds": round(sum(seconds) / len(seconds), 3) if seconds else None,
        "peak_rss_mb": max(rss) if rss else None,
        "cpu_seconds": round(sum(cpu) / len(cpu), 3) if cpu else None,
    }


def headline_metrics(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The metrics of an evaluation report, keyed by dotted path: ``base``, ``adapted``,
    ``delta``, and what says whether the delta is real (:func:`metric_summary`).

    Every mapping in the report that holds ``base``, ``adapted`` and ``delta`` is a metric. If
    the report names its headline metrics (a ``headline`` list of keys), only those are kept.
    """
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            if {"base", "adapted", "delta"} <= node.keys():
                found[".".join(path)] = metric_summary(node)
                return
            for key, value in node.items():
                if key != "headline":
                    walk(value, (*path, str(key)))

    walk(report, ())
    wanted = report.get("headline")
    if isinstance(wanted, list) and wanted:
        names = set(map(str, wanted))
        found = {
            key: value
            for key, value in found.items()
            if key in names or key.rsplit(".", 1)[-1] in names
        }
    return found


def metric_summary(entry: dict[str, Any]) -> dict[str, Any]:
    """One report metric for the manifest: a delta means little without its sample, interval
    and test. ``n`` is the number of commits the paired bootstrap resampled (the metric's
    ``count`` when it has no interval), ``delta_interval`` the delta's 95% interval
    ``[low, high]`` (null when not measured), ``role`` primary, secondary or exploratory, ``p`` the
    test's p-value and ``p_adjusted`` the Holm-adjusted one the verdict used (secondary metrics),
    ``verdict`` the report's (each null when absent)."""
    interval = entry.get("interval")
    return {
        "base": entry["base"],
        "adapted": entry["adapted"],
        "delta": entry["delta"],
        "n": interval["n"] if interval else entry.get("count"),
        "delta_interval": interval["delta"] if interval else None,
        "role": entry.get("role"),
        "p": entry.get("p"),
        "p_adjusted": entry.get("p_adjusted"),
        "verdict": entry.get("verdict"),
    }


def model_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """What training resolved: the LoRA targets, trainable parameters, dtype, batch."""
    keys = (
        "base_model",
        "resolved_targets",
        "trainable_params",
        "dtype",
        "quantization",
        "gradient_checkpointing",
        "micro_batch",
        "accumulation",
        "world_size",
        "effective_batch",
        "steps",
        "epochs",
        "hardware",
    )
    return {key: summary.get(key) for key in keys}


def build_manifest(
    *,
    model: str,
    config: dict[str, Any],
    roots: list[str],
    benchmarks: dict[str, str],
    training_summary: str | Path,
    eval_report: str | Path | None,
    workflow_dir: str | Path,
    base: str | Path = ".",
    snakemake_version: str | None = None,
    commit_stats: str | Path | None = None,
    code: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Assemble the manifest of one model's run.

    ``roots`` are the artifact files and directories, relative to ``base`` (the run
    directory); ``benchmarks`` maps stage name to its benchmark TSV; ``commit_stats`` is the
    extract stage's stats file (its HEAD and commit count go under ``data``); ``code`` maps
    stage name to the hash of the repotune code it ran (repotune.codehash). ``config``
    should be the resolved config (defaults filled), as the rule passes it.
    """
    base = Path(base)
    summary = json.loads((base / training_summary).read_text(encoding="utf-8"))
    report_path = base / eval_report if eval_report else None
    report = (
        json.loads(report_path.read_text(encoding="utf-8"))
        if report_path is not None and report_path.is_file()
        else None
    )
    stats_path = base / commit_stats if commit_stats else None
    extracted = (
        json.loads(stats_path.read_text(encoding="utf-8"))
        if stats_path is not None and stats_path.is_file()
        else {}
    )
    versions = package_versions()
    if snakemake_version and versions.get("snakemake") is None:
        versions["snakemake"] = snakemake_version
    kind = "cuda" if (summary.get("hardware") or {}).get("kind") == "cuda" else "cpu"
    data = git_state(config["repo"])
    files = artifact_files(roots, base)
    return {
        "manifest_version": MANIFEST_VERSION,
        "model": model,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "workflow": git_state(workflow_dir),
        "data": {
            "repo": data["path"],
            "head": data["sha"],
            "extracted_head": extracted.get("head"),
            "commits": extracted.get("commits"),
        },
        "config": config,
        "code": code or {},
        "software": versions,
        "hardware": machine(),
        "training": model_facts(summary),
        "reproducibility": {
            "device": kind,
            "bit_identical": kind == "cpu",
            "note": BIT_IDENTICAL_NOTE[kind],
            "volatile": VOLATILE,
        },
        "stages": {stage: read_benchmark(base / path) for stage, path in benchmarks.items()},
        "primary_metric": None if report is None else report.get("primary_metric"),
        "metrics": headline_metrics(report) if report is not None else {},
        "artifact_roots": sorted(roots),
        "artifacts": describe_artifacts(files, base),
    }


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    """Write the manifest as indented JSON, atomically."""
    write_text(path, json.dumps(manifest, indent=2) + "\n")
