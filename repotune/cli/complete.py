"""``repotune complete``: code completion at a place in a file, or for a prefix on stdin.

The prompt is :func:`repotune.inference.infill.infill_prompt`, the one the FIM evaluation asks
with, so the evaluation measures what this command does: the fill-in-the-middle format of the
run's record (the one its file documents were trained in, else the one its tokenizer has the
tokens of), else a plain continuation of the prefix, cut by whole lines to the prompt budget
(:func:`repotune.inference.budget.budget`). The completion is the greedy generation
(:func:`repotune.inference.decoding.greedy`), evaluation's generation for the same gap. When
``repotune serve`` runs for the model, it answers, through these same functions; else the model
is loaded here.
"""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repotune.cli.diff import git_toplevel
from repotune.cli.run import (
    EMPTY_EXIT,
    FinishedRun,
    LoadedModel,
    empty_answer,
    find_run,
    load,
    results_dir,
)
from repotune.errors import InputError
from repotune.inference.infill import Gap

if TYPE_CHECKING:
    from repotune.inference.prompts import Prompt

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
    parser.add_argument(
        "--no-server", action="store_true", help="load the model here even if `repotune serve` runs"
    )
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


def check_gap(gap: Gap) -> None:
    """A gap with nothing around it and no path gives the model nothing to go on."""
    if not gap.prefix and not gap.suffix and gap.path is None:
        raise InputError(
            "the code to complete",
            "is empty and has no path",
            "give FILE:LINE, text on stdin, or --path for a new file",
        )


def completion_prompt(loaded: LoadedModel, gap: Gap, max_new_tokens: int) -> tuple["Prompt", int]:
    """The prompt of ``gap`` (FIM where the run has a format, else a plain continuation) within
    the run's budget, and how many new tokens the answer may take."""
    from repotune.inference.budget import budget, context_length
    from repotune.inference.infill import infill_prompt

    record, tokenizer = loaded.record, loaded.tokenizer
    limits = budget(record, max_new_tokens, context_length(loaded.model))
    return infill_prompt(gap, record, tokenizer, limits.prompt_tokens), limits.new_tokens


def completion(loaded: LoadedModel, gap: Gap, max_new_tokens: int) -> str:
    """The model's completion of ``gap``: the greedy generation of its prompt."""
    from repotune.inference.decoding import greedy

    prompt, new_tokens = completion_prompt(loaded, gap, max_new_tokens)
    return greedy(loaded.model, loaded.tokenizer, prompt, new_tokens).text


def served_completion(run: FinishedRun, gap: Gap, max_new_tokens: int) -> str | None:
    """The running server's completion of ``gap`` (its ``/v1/completions``, answered by
    :func:`completion_prompt` and the same greedy decoding), None when no server of the model
    runs or it could not answer."""
    from repotune.serve import client

    return client.ask_running(
        run.results,
        run.model,
        lambda server: client.completion(
            server, gap.prefix, gap.suffix, gap.path, max_new_tokens, client.CLI_TIMEOUT
        ),
    )


def run(args: argparse.Namespace) -> int:
    if args.max_tokens < 1:
        raise InputError("--max-tokens", "must be at least 1", "give a positive count")
    if args.location is not None:
        gap = gap_at(args.location, args.repo)
    else:
        gap = gap_from_text(sys.stdin.read(), args.cursor, args.path)
    check_gap(gap)
    finished = find_run(results_dir(args.results), args.model)
    text = None if args.no_server else served_completion(finished, gap, args.max_tokens)
    if text is None:
        text = completion(load(finished, args.device), gap, args.max_tokens)
    if not text:
        return empty_answer("completion")
    sys.stdout.write(text)
    sys.stdout.write("\n")
    return 0
