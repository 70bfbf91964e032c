"""Mutation score of the modules whose bugs a user would never see (CONTRIBUTING.md).

Usage: python ci/mutation.py [MODULE ...]   (default: every module, cheapest first)

Each module gets its own mutmut working directory under build/mutation/<module>/: links to
repotune/, tests/, testdata/ and config/, and a pyproject.toml that tells mutmut which files to
mutate and which fast test files may kill their mutants. So a module's score counts only its
own unit tests; each run starts from scratch. The table printed at the end is killed/total per
module; a timeout counts as killed, a mutant no test reaches does not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"
# What the tests read besides the package and themselves (the schema gives config defaults).
COPIED = ("testdata", "config")
KILLED = {"killed", "timeout", "caught by type check"}


@dataclass(frozen=True)
class Module:
    """One row of the table: the files mutmut mutates and the tests allowed to kill them."""

    files: tuple[str, ...]
    tests: tuple[str, ...]
    # Mutant names to run, when only part of a file belongs to the module.
    mutants: tuple[str, ...] = ()
    # Fork each mutant's test run from a process that has run no test: forked from one that
    # has run a model, torch's thread pool deadlocks the child.
    forkserver: bool = False


MODULES = {
    "timesplit": Module(("repotune/curate/timesplit.py",), ("tests/test_timesplit.py",)),
    "filters": Module(("repotune/curate/filters.py",), ("tests/test_curate.py",)),
    "metrics": Module(
        ("repotune/evaluate/metrics.py", "repotune/evaluate/significance.py"),
        ("tests/test_metrics.py", "tests/test_significance.py"),
    ),
    "redaction": Module(("repotune/curate/redact.py",), ("tests/test_redact.py",)),
    "manifest": Module(
        ("repotune/manifest/stage.py", "repotune/manifest/verify.py"),
        ("tests/test_manifest.py", "tests/test_verify.py"),
    ),
    "checkpoint": Module(
        ("repotune/train/checkpoint.py",),
        (
            "tests/test_checkpoint.py",
            "tests/test_train.py::test_changed_training_config_starts_fresh",
        ),
    ),
    "packing": Module(
        ("repotune/shards/packing.py", "repotune/shards/torch_blocks.py"),
        # The packing and shard-writer unit tests; test_shards.py and the rest of
        # test_streaming.py run the whole tokenize stage (tens of seconds per mutant).
        (
            "tests/test_packing.py",
            "tests/test_streaming.py::test_stream_packer_packs_fixed_windows_of_commits_whatever_the_batches",
            "tests/test_streaming.py::test_block_weight_counts_tokens_not_commits",
            "tests/test_streaming.py::test_a_long_commits_documents_weigh_by_their_tokens_contexts_included",
            "tests/test_streaming.py::test_shard_writer_layout_loads_and_ignores_how_rows_arrive",
        ),
        ("repotune.shards.packing.*", "repotune.shards.torch_blocks.x_collate__mutmut_*"),
    ),
    "shorten": Module(
        ("repotune/shards/shorten.py",),
        ("tests/test_shorten.py", "tests/test_prompt.py"),
    ),
    "perplexity": Module(
        ("repotune/evaluate/perplexity.py", "repotune/packed.py"),
        ("tests/test_perplexity.py", "tests/test_packed.py"),
        forkserver=True,
    ),
}


def toml_list(values: list[str] | tuple[str, ...]) -> str:
    """A TOML array of strings (JSON's string escapes are valid TOML basic strings)."""
    return json.dumps(list(values))


def prepare(name: str, module: Module) -> Path:
    """The module's working directory: links to the sources and a pyproject.toml for mutmut.

    mutmut's own cache in mutants/ is dropped first: it keeps a surviving mutant's verdict
    after the tests change, so a score from it could be stale.
    """
    work = WORK / name
    shutil.rmtree(work / "mutants", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    for linked in ("repotune", "tests", *COPIED):
        link = work / linked
        if not link.is_symlink():
            link.symlink_to(ROOT / linked)
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    markers = pytest_options["ini_options"]["markers"]
    (work / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        f"markers = {toml_list(markers)}\n\n"
        "[tool.mutmut]\n"
        'source_paths = ["repotune"]\n'
        f"only_mutate = {toml_list(module.files)}\n"
        f"also_copy = {toml_list(COPIED)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(module.tests)}\n"
        'pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider"]\n'
        "use_git_change_detection = false\n"
        + ('process_isolation = "forkserver"\n' if module.forkserver else "")
    )
    return work


def statuses(work: Path, module: Module) -> dict[str, str]:
    """Each of the module's mutants and what its tests did to it, from `mutmut results`."""
    listing = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = {}
    for line in listing.splitlines():
        mutant, _, status = line.strip().rpartition(": ")
        if mutant and (not module.mutants or any(fnmatch(mutant, p) for p in module.mutants)):
            found[mutant] = status
    return found


def run(name: str, module: Module, max_children: int) -> dict[str, str]:
    """Run mutmut over one module and return every mutant's status."""
    work = prepare(name, module)
    print(f"== {name}: {', '.join(module.files)}", flush=True)
    subprocess.run(
        [str(MUTMUT), "run", "--max-children", str(max_children), *module.mutants],
        cwd=work,
        check=True,
    )
    return statuses(work, module)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen modules, then print the score table and the surviving mutants."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=", ".join(MODULES))
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="print the table of the last runs (kept in build/mutation/) without running mutmut",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}: choose from {', '.join(MODULES)}")
    chosen = args.modules or list(MODULES)
    if args.table_only:
        results = {name: statuses(WORK / name, MODULES[name]) for name in chosen}
    else:
        results = {name: run(name, MODULES[name], args.max_children) for name in chosen}
    # "not run": mutants an interrupted run never reached, left out of the score.
    print("\n| module | killed/total | score | not run |\n|---|---|---|---|")
    for name, found in results.items():
        killed = sum(status in KILLED for status in found.values())
        pending = sum(status == "not checked" for status in found.values())
        total = len(found) - pending
        score = 100 * killed / total if total else 0.0
        print(f"| {name} | {killed}/{total} | {score:.0f}% | {pending} |")
    for name, found in results.items():
        for mutant, status in sorted(found.items()):
            if status not in KILLED and status != "not checked":
                print(f"{name}: {mutant}: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
