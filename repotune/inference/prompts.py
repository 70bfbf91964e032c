"""Commit prompts: the commit-message and code-change questions of a commit, and text prompts.

One function per job, used by evaluation and by ``repotune suggest`` alike, so the model is
measured on the very prompts a user sends:

* **commit message** (:func:`commit_message_prompt`): the commit's ``change_to_message``
  rendering up to the message marker, as token ids the training shards hold
  (:func:`repotune.shards.prompt.prompt_ids`). A prompt over the budget keeps its end (the
  marker and the change before it) behind the task header and the header of the file it
  continues, as a training continuation of a long commit reads; never text starting mid-line.
* **code change** (:func:`code_change_prompt`): the ``message_to_change`` rendering up to a
  run of added lines **and its first** ``+``. The prompt says that an added line starts (a
  prompt that ended at the line start would leave the model free to write a context or
  removed line, which ends the run at once); the answer reads as ``+`` and the generation, up
  to the first line that is not an added line (:data:`CODE_STOPS`). Over the budget it is cut
  as a commit-message prompt is.
* **text** (:func:`text_prompt`): a prompt given as text (a behavioural test), encoded as
  training encoded documents (only the template's markers special), its beginning dropped
  beyond the budget.

Every prompt carries its stop strings: the run's document stops (:mod:`repotune.inference.stops`)
plus the task's own. The tokenizer's modules (transformers) are imported where a prompt is
encoded, so the command line can name these types without loading them.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repotune.inference.record import RunRecord
from repotune.shards.render import CHANGE_TO_MESSAGE, MESSAGE_TO_CHANGE, render

if TYPE_CHECKING:
    from repotune.shards.tokenizer import TextEncoder

ADDED = "+"
"""The marker of an added diff line: the last character of a code-change prompt and the
first of its answer."""
CODE_STOPS = ("\n ", "\n-", "\n@@", "\ndiff --git", "\n\\")
"""A diff line that is not an added line ends the run of added lines a code change asks for."""


@dataclass(frozen=True)
class Prompt:
    """What the model is given: token ids, the strings that end its answer, and whether the
    question was cut to fit the budget."""

    ids: tuple[int, ...]
    stops: tuple[str, ...]
    truncated: bool = False


def prompt_encoder(tokenizer: Any, record: RunRecord) -> "TextEncoder":
    """The encoder of commit and text prompts: the template's markers special, every other
    special-token string read as text, as the tokenize stage encoded documents."""
    from repotune.shards.tokenizer import TextEncoder

    return TextEncoder(tokenizer, record.template.markers)


def _commit_prompt(
    commit: Mapping[str, Any],
    task: str,
    record: RunRecord,
    encoder: "TextEncoder",
    max_tokens: int | None,
    end: int | None,
    stops: Sequence[str],
) -> Prompt:
    from repotune.shards.prompt import prompt_ids

    template = record.template
    full = prompt_ids(commit, task, template, encoder, end=end)
    if max_tokens is None or len(full) <= max_tokens:
        return Prompt(tuple(full), tuple(stops))
    cut = prompt_ids(commit, task, template, encoder, end=end, max_tokens=max_tokens)
    return Prompt(tuple(cut), tuple(stops), truncated=True)


def commit_message_prompt(
    commit: Mapping[str, Any], record: RunRecord, encoder: "TextEncoder", max_tokens: int | None
) -> Prompt:
    """The question "which message goes with this change?" of ``commit`` (a curated row, or a
    staged change with an empty message), within ``max_tokens`` (None: uncut)."""
    stops = record.stops
    return _commit_prompt(commit, CHANGE_TO_MESSAGE, record, encoder, max_tokens, None, stops)


def code_change_prompt(
    commit: Mapping[str, Any],
    record: RunRecord,
    encoder: "TextEncoder",
    line_start: int,
    max_tokens: int | None,
) -> Prompt:
    """The question "which lines are added here?" of ``commit``: its ``message_to_change``
    rendering up to the added line that starts at character ``line_start``, that line's ``+``
    included, within ``max_tokens`` (None: uncut)."""
    rendered = render(commit, MESSAGE_TO_CHANGE, record.template)
    if rendered[line_start : line_start + len(ADDED)] != ADDED or (
        line_start and rendered[line_start - 1] != "\n"
    ):
        raise ValueError(f"no added line starts at character {line_start} of the rendering")
    end = line_start + len(ADDED)
    stops = (*record.stops, *CODE_STOPS)
    return _commit_prompt(commit, MESSAGE_TO_CHANGE, record, encoder, max_tokens, end, stops)


def text_prompt(
    text: str,
    encoder: "TextEncoder",
    stops: Sequence[str],
    max_tokens: int | None,
) -> Prompt:
    """A prompt given as text, its beginning dropped beyond ``max_tokens`` (None: uncut)."""
    (ids,) = encoder([text])
    if max_tokens is None or len(ids) <= max_tokens:
        return Prompt(tuple(ids), tuple(stops))
    return Prompt(tuple(ids[-max_tokens:]), tuple(stops), truncated=True)
