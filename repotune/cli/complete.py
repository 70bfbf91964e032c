"""``repotune complete``: code completion at a place in a file, or for a prefix on stdin.

The prompt is :func:`repotune.inference.infill.infill_prompt`, the one the FIM evaluation asks
with, so the evaluation measures what this command does: the fill-in-the-middle format of the
run's record (the one its file documents were trained in, else the one its tokenizer has the
tokens of), else a plain continuation of the prefix, cut by whole lines to the prompt budget
(:func:`repotune.inference.budget.budget`). The completion is the greedy generation
(:func:`repotune.inference.decoding.continuations`), evaluation's generation for the same gap.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from repotune.cli.diff import git_toplevel
from repotune.cli.run import EMPTY_EXIT, LoadedModel, empty_answer, find_run, load, results_dir
from repotune.errors import InputError
from repotune.inference.infill import Gap

DEFAULT_CURSOR = "<|cursor|>"
HELP = "complete code at FILE:LINE, or the text on stdin (prefix[<|cursor|>suffix])"
EXAMPLES = f"""examples:
  repotune complete src/app.py:42             # fill in at the start of line 42
  printf 'def add(a, b):\\n' | repotune complete --path src/add.py
  cat snippet.py | repotune complete --cursor '@@'   # '@@' marks where to fill in

exit status: 0 code printed, 1 bad input (one line on stderr), {EMPTY_EXIT} the model's answer
was empty (one line on stderr, nothing on stdout)
"""


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "complete",
        parents=[common],
        help=HELP,
        description=HELP + ".",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("location", nargs="?", help="FILE:LINE (1-based); omit to read stdin")
    parser.add_argument("--max-tokens", type=int, default=48, help="longest completion in tokens")
    parser.add_argument(
        "--cursor", default=DEFAULT_CURSOR, help="marks the cursor in text read from stdin"
    )
    parser.add_argument("--path", help="the file's path for text on stdin (FIM models)")
    parser.set_defaults(handler=run)


def gap_at(location: str, repo: str) -> Gap:
    """``FILE:LINE``: the prefix is every line before LINE, the suffix LINE and after."""
    name, _, line = location.rpartition(":")
    if not name or not line.isdigit() or int(line) < 1:
        raise InputError(f"location '{location}'", "is not FILE:LINE", "give e.g. src/app.py:42")
    path = Path(name) if Path(name).is_absolute() else Path(repo) / name
    if not path.is_file():
        raise InputError(f"file '{path}'", "does not exist", "give a file of the repository")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    if int(line) > len(lines) + 1:
        raise InputError(
            f"location '{location}'", f"is past the file's {len(lines)} lines", "give a line in it"
        )
    cut = int(line) - 1
    relative = path.resolve().relative_to(git_toplevel(path.parent)).as_posix()
    return Gap("".join(lines[:cut]), "".join(lines[cut:]), relative)


def gap_from_text(text: str, cursor: str, path: str | None) -> Gap:
    prefix, found, suffix = text.partition(cursor)
    return Gap(prefix, suffix if found else "", path)


def completion(loaded: LoadedModel, gap: Gap, max_new_tokens: int) -> str:
    """The model's completion of ``gap`` (greedy): FIM where the run has a format, else a
    plain continuation."""
    from repotune.inference.budget import budget, context_length
    from repotune.inference.decoding import Decoding, continuations
    from repotune.inference.infill import infill_prompt

    record, tokenizer = loaded.record, loaded.tokenizer
    limits = budget(record, max_new_tokens, context_length(loaded.model))
    prompt = infill_prompt(gap, record, tokenizer, limits.prompt_tokens)
    decoding = Decoding(candidates=1, max_new_tokens=limits.new_tokens)
    return continuations(loaded.model, tokenizer, prompt, decoding)[0]


def run(args: argparse.Namespace) -> int:
    if args.max_tokens < 1:
        raise InputError("--max-tokens", "must be at least 1", "give a positive count")
    if args.location is not None:
        gap = gap_at(args.location, args.repo)
    else:
        gap = gap_from_text(sys.stdin.read(), args.cursor, args.path)
    if not gap.prefix and not gap.suffix and gap.path is None:
        raise InputError(
            "the code to complete",
            "is empty and has no path",
            "give FILE:LINE, text on stdin, or --path for a new file",
        )
    finished = find_run(results_dir(args.results), args.model)
    text = completion(load(finished, args.device), gap, args.max_tokens)
    if not text:
        return empty_answer("completion")
    sys.stdout.write(text)
    sys.stdout.write("\n")
    return 0
