"""Fill-in-the-middle prompts: the one builder of ``repotune complete`` and the FIM evaluation.

A run whose record names a FIM format (:attr:`repotune.inference.record.RunRecord.fim`: the
format of its file documents, or the one its tokenizer was pre-trained with) is asked as it was
trained: :func:`repotune.shards.fim.fim_prompt` in prefix-suffix-middle order, the file's path
before the FIM markers, markers as special tokens where the tokenizer has them and as text
where it read them as text in training. A run without one continues the code before the cursor
as plain text (after EOS, a document's start, when there is none).

Over the budget whole lines go: from the start of the prefix (the code just before the cursor
matters most; the path stays) and from the end of the suffix, which keeps at most a quarter of
the room.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from repotune.inference.prompts import Prompt
from repotune.inference.record import RunRecord
from repotune.shards.fim import fim_parts


@dataclass(frozen=True)
class Gap:
    """The text before and after the cursor, and the file's repository path when known."""

    prefix: str
    suffix: str
    path: str | None = None


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


def infill_prompt(gap: Gap, record: RunRecord, tokenizer: Any, max_tokens: int) -> Prompt:
    """The prompt that asks the run's model for the middle of ``gap``, within ``max_tokens``."""
    from repotune.shards.tokenizer import TextEncoder  # transformers: load on use

    fmt = record.fim
    if fmt is None:
        encode = TextEncoder(tokenizer, record.template.markers)
        size = lambda text: len(encode.plain([text])[0])  # noqa: E731
        lines = gap.prefix.splitlines(keepends=True)
        prefix = "".join(_lines_within(lines, max_tokens, size, True))
        # Nothing before the cursor (a new file): the start of a document, which follows EOS
        # in the training shards.
        ids = encode.plain([prefix])[0] or [tokenizer.eos_token_id]
        return Prompt(tuple(ids), record.stops, truncated=len(prefix) < len(gap.prefix))
    encode = TextEncoder(tokenizer, fmt.markers)

    def ids(prefix: str, suffix: str) -> list[int]:
        return encode.marked([fim_parts(prefix, suffix, fmt, path=gap.path)])[0]

    full = ids(gap.prefix, gap.suffix)
    if len(full) <= max_tokens:
        return Prompt(tuple(full), record.stops)
    empty = len(ids("", ""))
    size = lambda text: len(encode.plain([text])[0])  # noqa: E731
    suffix_lines = gap.suffix.splitlines(keepends=True)
    suffix = "".join(_lines_within(suffix_lines, (max_tokens - empty) // 4, size, False))
    room = max_tokens - len(ids("", suffix))
    prefix_lines = gap.prefix.splitlines(keepends=True)
    prefix = "".join(_lines_within(prefix_lines, room, size, True))
    while len(ids(prefix, suffix)) > max_tokens and prefix:  # tokens merging across the cut
        prefix = prefix.split("\n", 1)[1] if "\n" in prefix else ""
    return Prompt(tuple(ids(prefix, suffix)), record.stops, truncated=True)
