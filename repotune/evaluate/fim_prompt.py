"""Fill-in-the-middle prompts within a token budget, shared by ``repotune complete`` and the
FIM evaluation, so a model is measured on exactly the prompts a user's completion sends.

A model trained on FIM file documents is asked in their format (stats.json's ``fim``,
:func:`repotune.shards.fim.trained_fim_format`), markers as text where its tokenizer lacks them.
Otherwise, a model whose tokenizer carries a fill-in-the-middle format's tokens (StarCoder's and
StarCoder2's ``<fim_prefix>``/``<fim_suffix>``/``<fim_middle>``, or the plain
``<|fim_prefix|>``... of a tokenizer trained with FIM documents) is asked as it was trained:
:func:`repotune.shards.fim.fim_prompt` in prefix-suffix-middle order, the file's header
(:func:`repotune.shards.fim.file_header`, its path) at the start of the prefix. Any other model
continues the prefix as plain text (after EOS, a document's start, when the prefix is empty).
Over the budget (the training block less the new tokens),
whole lines go: from the start of the prefix (the header stays; the code just before the cursor
matters most) and from the end of the suffix, which keeps at most a quarter of the room.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from repotune.shards.fim import FimFormat, choose_fim_format, file_header, fim_prompt


@dataclass(frozen=True)
class Gap:
    """The text before and after the cursor, and the file's repository path when known."""

    prefix: str
    suffix: str
    path: str | None = None


def native_fim(template: str, tokenizer: Any) -> FimFormat | None:
    """The FIM format the tokenizer carries the tokens of, or None (plain continuation)."""
    from repotune.shards.tokenizer import special_tokens

    specials = special_tokens(tokenizer)
    chosen = choose_fim_format(template, specials)
    return chosen if set(chosen.markers) <= specials else None


def block_budget(seq_len: int, max_new_tokens: int, context: int | None) -> tuple[int, int]:
    """``(max_prompt_tokens, max_new_tokens)``: a prompt of at most a training block less one
    token (the model never saw longer), both within the model's ``context``."""
    from repotune.evaluate.generation import GenerationSettings, budgets  # torch: load on use

    wanted = GenerationSettings(max_new_tokens=max_new_tokens, max_prompt_tokens=seq_len - 1)
    return budgets(wanted, context)


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
        # Nothing before the cursor (a new file): the start of a document, which follows EOS
        # in the training shards.
        return encode(["".join(prefix)])[0] or [tokenizer.eos_token_id], tuple(markers)
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
