"""Each document or prompt bug issue 27 found, put back, must fail the learnability tests.

Usage: python ci/planted_bugs.py [BUG ...]   (default: every bug, then the code as it is)

A random model writes noise whatever it is trained on, so these bugs passed every other test;
tests/test_learnability.py trains the tiny model on a history with known answers and must
catch each of them. For each bug this script makes a detached worktree of HEAD under
build/planted/<bug>/, puts the bug back there (each edit must match its file exactly once, so
a refactor that moves the code fails loudly here instead of planting nothing), runs the
learnability module in it, and keeps its log beside it. The table printed at the end says which
tests failed per bug; a bug that fails no test, or the unchanged code failing one, exits 1.
Each run trains a model: about 4 minutes on 2 cores, one bug at a time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "planted"
TESTS = "tests/test_learnability.py"


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (found exactly once) by ``new`` in ``path``."""

    path: str
    old: str
    new: str


BUGS: dict[str, tuple[str, tuple[Edit, ...]]] = {
    "fim_path_in_prefix": (
        "the file header inside the FIM prefix: in SPM order the middle marker is followed "
        "by the file marker, a stop string",
        (
            Edit(
                "repotune/shards/fim.py",
                "return join(header, before, text(prefix), after, text(suffix), middle)",
                "return join(before, header, text(prefix), after, text(suffix), middle)",
            ),
            Edit(
                "repotune/shards/fim.py",
                "return join(header, before, after, text(suffix), middle, text(prefix))",
                "return join(before, after, text(suffix), middle, header, text(prefix))",
            ),
        ),
    ),
    "message_without_change": (
        "a long change->message commit split like a message->change one: its message lands "
        "in a continuation document behind the task header, without the change",
        (
            Edit(
                "repotune/shards/stage.py",
                "elif task == CHANGE_TO_MESSAGE:",
                "elif False:",
            ),
        ),
    ),
    "prompt_cut_token_by_token": (
        "a commit prompt over its budget cut from the left token by token: it starts "
        "mid-line, without task or file header",
        (
            Edit(
                "repotune/shards/prompt.py",
                "    if max_tokens is None or len(ids) <= max_tokens:\n        return ids\n",
                "    if max_tokens is None or len(ids) <= max_tokens:\n        return ids\n"
                "    return ids[-max_tokens:]\n",
            ),
        ),
    ),
    "markers_in_text_are_special": (
        "marker strings in the repository's text encoded as the markers' ids",
        (
            Edit(
                "repotune/shards/tokenizer.py",
                "self._plain.encode_special_tokens = True",
                "self._plain.encode_special_tokens = False",
            ),
        ),
    ),
    "epochs_as_planned": (
        "the report gives the planned whole epochs, not the fraction the steps drew",
        (
            Edit(
                "repotune/train/outputs.py",
                '"epochs": run.epochs_at(progress.step),',
                '"epochs": run.epochs,',
            ),
        ),
    ),
    "code_question_at_line_start": (
        "the code-change question ends where the added lines start, without their '+': "
        "the model may go on with a context line, which ends the answer",
        (
            Edit(
                "repotune/inference/prompts.py",
                "    end = line_start + len(ADDED)\n",
                "    end = line_start\n",
            ),
            Edit(
                "repotune/evaluate/tasks.py",
                "return added_code(ADDED + generation) if task == CODE_CHANGE else generation",
                "return added_code(generation) if task == CODE_CHANGE else generation",
            ),
        ),
    ),
}
NONE = "none"
"""The code as it is: every learnability test must pass."""


def plant(tree: Path, edits: tuple[Edit, ...]) -> None:
    """Apply ``edits`` in ``tree``; an edit whose text is not there exactly once raises."""
    for edit in edits:
        path = tree / edit.path
        source = path.read_text("utf-8")
        if source.count(edit.old) != 1:
            raise SystemExit(f"{edit.path}: the bug's text is there {source.count(edit.old)} times")
        path.write_text(source.replace(edit.old, edit.new), "utf-8")


def run(bug: str) -> tuple[list[str], int, float]:
    """Plant ``bug`` in a fresh worktree of HEAD and run the learnability tests there:
    the failed tests, pytest's exit status and the seconds it took."""
    tree = WORK / bug
    if tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(tree), "HEAD"], cwd=ROOT, check=True
    )
    if bug != NONE:
        plant(tree, BUGS[bug][1])
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", TESTS, "-p", "no:cacheprovider", "-rf", "-q"]
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (WORK / f"{bug}.log").write_text(result.stdout + result.stderr, "utf-8")
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) \S+::(\w+)", result.stdout, re.M)))
    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    return failed, result.returncode, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bugs", nargs="*", choices=[*BUGS, NONE], metavar="BUG")
    bugs = parser.parse_args().bugs or [*BUGS, NONE]
    WORK.mkdir(parents=True, exist_ok=True)
    wrong = 0
    rows = []
    for bug in bugs:
        failed, code, seconds = run(bug)
        caught = bool(failed) if bug != NONE else code == 0
        wrong += not caught
        rows.append((bug, ", ".join(failed) or "-", f"{seconds:.0f}", "yes" if caught else "NO"))
        print(f"{bug}: {rows[-1][1]} ({seconds:.0f} s)", flush=True)
    print("\n| bug | learnability tests that fail | s | as expected |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
