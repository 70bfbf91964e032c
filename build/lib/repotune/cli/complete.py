"""``repotune complete``: code completion at a place in a file, or for a prefix on stdin.

A model with a native fill-in-the-middle format gets it: StarCoder and StarCoder2 tokenizers
carry ``<fim_prefix>``, ``<fim_suffix>`` and ``<fim_middle>``, and the prompt is
``<fim_prefix>PREFIX<fim_suffix>SUFFIX<fim_middle>`` (prefix-suffix-middle, their training
order). Any other model continues the prefix as plain text. Either way the prompt keeps the
end of the prefix (the code just before the cursor matters most) and, for FIM, the start of
the suffix, within the training block length less the new tokens.
"""

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repotune.cli.decode import Decoding, continuations
from repotune.cli.run import LoadedModel, find_run, load, results_dir
from repotune.errors import InputError

FIM_TOKENS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")
FIM_STOPS = ("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>")
DEFAULT_CURSOR = "<|cursor|>"
HELP = "complete code at FILE:LINE, or the text on stdin (prefix[<|cursor|>suffix])"
EXAMPLES = """examples:
  repotune complete src/app.py:42             # fill in at the start of line 42
  printf 'def add(a, b):\\n' | repotune complete
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
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class Gap:
    """The text before and after the cursor."""

    prefix: str
    suffix: str


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
    return Gap("".join(lines[:cut]), "".join(lines[cut:]))


def gap_from_text(text: str, cursor: str) -> Gap:
    prefix, found, suffix = text.partition(cursor)
    return Gap(prefix, suffix if found else "")


def has_fim(tokenizer: Any) -> bool:
    """Whether the tokenizer carries StarCoder's fill-in-the-middle tokens as special tokens."""
    from repotune.shards.tokenizer import special_tokens

    return set(FIM_TOKENS) <= special_tokens(tokenizer)


def prompt_for(
    tokenizer: Any, markers: Sequence[str], gap: Gap, max_prompt: int
) -> tuple[list[int], tuple[str, ...]]:
    """The prompt ids of ``gap`` within ``max_prompt`` tokens, and the stop strings.

    FIM: the suffix keeps its beginning (at most a quarter of the room when both do not fit)
    and the prefix its end. Plain: the prefix's last ``max_prompt`` tokens.
    """
    from repotune.shards.tokenizer import TextEncoder

    if not has_fim(tokenizer):
        return TextEncoder(tokenizer, markers)([gap.prefix])[0][-max_prompt:], tuple(markers)
    prefix_ids, suffix_ids = TextEncoder(tokenizer, FIM_TOKENS)([gap.prefix, gap.suffix])
    room = max_prompt - len(FIM_TOKENS)
    if len(prefix_ids) + len(suffix_ids) > room:
        suffix_ids = suffix_ids[: room // 4]
        prefix_ids = prefix_ids[len(prefix_ids) - (room - len(suffix_ids)) :]
    start, hole, middle = (tokenizer.convert_tokens_to_ids(token) for token in FIM_TOKENS)
    return [start, *prefix_ids, hole, *suffix_ids, middle], (*FIM_STOPS, *markers)


def completion(loaded: LoadedModel, gap: Gap, max_new_tokens: int) -> str:
    """The model's completion of ``gap``: FIM where native, else a plain continuation."""
    from repotune.evaluate.generation import GenerationSettings, budgets, context_length

    wanted = GenerationSettings(max_new_tokens=max_new_tokens, max_prompt_tokens=loaded.seq_len - 1)
    max_prompt, max_new = budgets(wanted, context_length(loaded.model))
    ids, stops = prompt_for(loaded.tokenizer, loaded.template.markers, gap, max_prompt)
    decoding = Decoding(candidates=1, max_new_tokens=max_new)
    return continuations(loaded.model, loaded.tokenizer, ids, stops, decoding)[0]


def run(args: argparse.Namespace) -> int:
    if args.max_tokens < 1:
        raise InputError("--max-tokens", "must be at least 1", "give a positive count")
    if args.location is not None:
        gap = gap_at(args.location, args.repo)
    else:
        gap = gap_from_text(sys.stdin.read(), args.cursor)
    if not gap.prefix and not gap.suffix:
        raise InputError("the code to complete", "is empty", "give FILE:LINE or text on stdin")
    finished = find_run(results_dir(args.results), args.model)
    sys.stdout.write(completion(load(finished, args.device), gap, args.max_tokens))
    sys.stdout.write("\n")
    return 0
