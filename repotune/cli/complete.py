"""``repotune complete``: code completion at a place in a file, or for a prefix on stdin.

A model whose tokenizer carries a fill-in-the-middle format's tokens (StarCoder's and
StarCoder2's ``<fim_prefix>``/``<fim_suffix>``/``<fim_middle>``, or the plain
``<|fim_prefix|>``... of a tokenizer trained with FIM documents) is asked as it was trained:
:func:`repotune.shards.fim.fim_prompt` in prefix-suffix-middle order, the file's header
(:func:`repotune.shards.fim.file_header`, its path) at the start of the prefix. Any other model
continues the prefix as plain text. Over the budget (the training block less the new tokens),
whole lines go: from the start of the prefix (the header stays; the code just before the cursor
matters most) and from the end of the suffix, which keeps at most a quarter of the room.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repotune.cli.decode import Decoding, continuations
from repotune.cli.diff import git_toplevel
from repotune.cli.run import LoadedModel, find_run, load, results_dir
from repotune.errors import InputError
from repotune.shards.fim import FimFormat, choose_fim_format, file_header, fim_prompt

DEFAULT_CURSOR = "<|cursor|>"
HELP = "complete code at FILE:LINE, or the text on stdin (prefix[<|cursor|>suffix])"
EXAMPLES = """examples:
  repotune complete src/app.py:42             # fill in at the start of line 42
  printf 'def add(a, b):\\n' | repotune complete --path src/add.py
  cat snippet.py | repotune complete --cursor '@@'   # '@@' marks where to fill in
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


@dataclass(frozen=True)
class Gap:
    """The text before and after the cursor, and the file's repository path when known."""

    prefix: str
    suffix: str
    path: str | None = None


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


def native_fim(template: str, tokenizer: Any) -> FimFormat | None:
    """The FIM format the tokenizer carries the tokens of, or None (plain continuation)."""
    from repotune.shards.tokenizer import special_tokens

    specials = special_tokens(tokenizer)
    chosen = choose_fim_format(template, specials)
    return chosen if set(chosen.markers) <= specials else None


def _lines_within(
    lines: list[str], budget: int, size: Callable[[str], int], from_end: bool
) -> list[str]:
    """The most whole lines, taken from the end (or the start), whose text has ``size`` <=
    ``budget`` (binary search: size grows with the lines taken)."""
    low, high = 0, len(lines)
    while low < high:
        middle = (low + high + 1) // 2
        taken = lines[len(lines) - middle :] if from_end else lines[:middle]
        if size("".join(taken)) <= budget:
            low = middle
        else:
            high = middle - 1
    return lines[len(lines) - low :] if from_end else lines[:low]


def prompt_for(
    tokenizer: Any,
    template: str,
    markers: Sequence[str],
    gap: Gap,
    max_prompt: int,
    trained: FimFormat | None = None,
) -> tuple[list[int], tuple[str, ...]]:
    """The prompt ids of ``gap`` within ``max_prompt`` tokens, and the stop strings.

    ``trained``: the FIM format the run's file documents used (its stats.json), which wins
    over the tokenizer's native one: a hub tokenizer without FIM tokens learnt the plain
    markers as text, and is asked with them as text.
    """
    from repotune.shards.tokenizer import TextEncoder

    fmt = trained or native_fim(template, tokenizer)
    if fmt is None:
        encode = TextEncoder(tokenizer, markers)
        size = lambda text: len(encode([text])[0])  # noqa: E731
        prefix = _lines_within(gap.prefix.splitlines(keepends=True), max_prompt, size, True)
        return encode(["".join(prefix)])[0], tuple(markers)
    encode = TextEncoder(tokenizer, fmt.markers)
    header = file_header(gap.path, fmt) if gap.path else ""

    def ids(prefix: str, suffix: str) -> list[int]:
        return encode([fim_prompt(header + prefix, suffix, fmt)])[0]

    full = ids(gap.prefix, gap.suffix)
    stops = (tokenizer.eos_token, *fmt.markers, *markers)
    if len(full) <= max_prompt:
        return full, stops
    empty = len(ids("", ""))
    size = lambda text: len(encode([text])[0])  # noqa: E731
    suffix_lines = gap.suffix.splitlines(keepends=True)
    suffix = "".join(_lines_within(suffix_lines, (max_prompt - empty) // 4, size, False))
    budget = max_prompt - len(ids("", suffix))
    prefix_lines = gap.prefix.splitlines(keepends=True)
    prefix = "".join(_lines_within(prefix_lines, budget, size, True))
    while len(ids(prefix, suffix)) > max_prompt and prefix:  # tokens merging across the cut
        prefix = prefix.split("\n", 1)[1] if "\n" in prefix else ""
    return ids(prefix, suffix), stops


def completion(loaded: LoadedModel, gap: Gap, max_new_tokens: int) -> str:
    """The model's completion of ``gap``: FIM where native, else a plain continuation."""
    from repotune.evaluate.generation import GenerationSettings, budgets, context_length

    wanted = GenerationSettings(max_new_tokens=max_new_tokens, max_prompt_tokens=loaded.seq_len - 1)
    max_prompt, max_new = budgets(wanted, context_length(loaded.model))
    template = loaded.template
    ids, stops = prompt_for(
        loaded.tokenizer, template.name, template.markers, gap, max_prompt, loaded.fim
    )
    decoding = Decoding(candidates=1, max_new_tokens=max_new)
    return continuations(loaded.model, loaded.tokenizer, ids, stops, decoding)[0]


def run(args: argparse.Namespace) -> int:
    if args.max_tokens < 1:
        raise InputError("--max-tokens", "must be at least 1", "give a positive count")
    if args.location is not None:
        gap = gap_at(args.location, args.repo)
    else:
        gap = gap_from_text(sys.stdin.read(), args.cursor, args.path)
    if not gap.prefix and not gap.suffix:
        raise InputError("the code to complete", "is empty", "give FILE:LINE or text on stdin")
    finished = find_run(results_dir(args.results), args.model)
    sys.stdout.write(completion(load(finished, args.device), gap, args.max_tokens))
    sys.stdout.write("\n")
    return 0
