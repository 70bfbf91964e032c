"""A commit's token ids: built one way for training documents and for every prompt.

A byte-level pre-tokenizer looks ahead at whitespace: ``" \\n"`` followed by ``"@@"`` is split
differently when it ends the text than when more text follows. Encoding a prompt on its own
therefore gives other ids than the same text had inside the training document (a blank
context line at a hunk's end is enough). So nothing here encodes "the prompt text": a commit
is rendered in pieces (repotune.shards.render.render_parts), the pieces are encoded one by
one, and a prompt is the leading part of those ids, exactly as the tokenize stage builds the
commit's documents. The prompt ids are then a prefix of the commit's training ids.

Longer than a block, the two task directions differ:

* ``change_to_message``: one document, the message whole and the change cut to fit
  (:func:`change_to_message_ids`, repotune.shards.shorten: whole hunks and files dropped,
  then lines, a mark left where something went). A prompt over its budget is cut the same
  way (:func:`prompt_ids`), so ``repotune suggest`` and the evaluation ask in exactly the
  form the model learnt.
* ``message_to_change``: the commit is split into documents (repotune.shards.packing); each
  document after the first starts with a context: the task header
  (repotune.shards.render.task_header) and the header of the file it continues (its
  ``diff --git`` line and the mode/rename/``---``/``+++`` lines). A context never takes more
  than half a document: when the whole file header does not fit, only its first line is
  kept, then only the task header; a document too short for even that (tiny blocks) has
  none. A prompt longer than its budget is cut the same way, so it reads like a training
  continuation rather than text that starts mid-line.
"""

from collections.abc import Mapping, Sequence

from repotune.shards.marked import Marked, split
from repotune.shards.packing import Context, fit
from repotune.shards.render import (
    CHANGE_TO_MESSAGE,
    Commit,
    Piece,
    Template,
    render_parts,
    render_prompt,
    task_opening,
)
from repotune.shards.shorten import FileIds, cut_change, file_ids
from repotune.shards.tokenizer import TextEncoder


def context_texts(parts: Sequence[Piece], header: Marked) -> list[Marked]:
    """The texts a long commit's contexts are made of, to encode along with its pieces.

    The task header (:func:`repotune.shards.render.task_opening`), then for each file its
    header's first line and its other lines: the first line ends in a newline and the next
    starts with a non-space, so encoding the two apart gives the ids of the whole header.
    """
    texts = [header]
    for file_header in (p.header for p in parts if p.opens_file):
        texts += split(file_header, "".join(file_header).index("\n") + 1)
    return texts


def contexts(parts: Sequence[Piece], context_ids: Sequence[list[int]]) -> list[Context]:
    """Each piece's :class:`Context`, from the ids of :func:`context_texts` (same order).

    Options, longest first: the task header with the whole file header, with only the file
    header's first line, alone (a document takes the first that fits half of it).
    """
    header, file_ids = context_ids[0], iter(context_ids[1:])
    task = (header,)
    files: Mapping[Marked, Context] = {}  # one per file, shared by its pieces
    for name in (p.header for p in parts if p.opens_file):
        first, rest = next(file_ids), next(file_ids)
        inside = (header + first + rest, header + first, header)
        files[name] = Context(inside, inside)
    opening = {name: Context(task, context.inside) for name, context in files.items()}
    empty = Context(task, task)
    return [
        (opening if part.opens_file else files)[part.header] if part.header else empty
        for part in parts
    ]


def change_files(
    parts: Sequence[Piece], piece_ids: Sequence[list[int]], context_ids: Sequence[list[int]]
) -> list[FileIds]:
    """The files of a rendering as repotune.shards.shorten cuts them: each file's pieces' ids
    (``piece_ids``, same order as ``parts``) and its header's own ids, from the ids of
    :func:`context_texts` (``context_ids``: its first line and its other lines)."""
    names = (p.header for p in parts if p.opens_file)
    lines = iter(context_ids[1:])
    headers = {name: next(lines) + next(lines) for name in names}
    grouped: list[tuple[Marked, list[list[int]]]] = []
    for part, ids in zip(parts, piece_ids, strict=True):
        if part.opens_file:
            grouped.append((part.header, [ids]))
        elif part.header:
            grouped[-1][1].append(ids)
    return [file_ids(pieces, headers[name]) for name, pieces in grouped]


def change_to_message_ids(
    parts: Sequence[Piece],
    piece_ids: Sequence[list[int]],
    context_ids: Sequence[list[int]],
    max_tokens: int,
    encoder: TextEncoder,
    subject_ids: list[int] | None = None,
) -> list[int]:
    """The one training document of a ``change_to_message`` rendering (``parts``, encoded as
    ``piece_ids``, with the ids of its :func:`context_texts`) in at most ``max_tokens``.

    The message (the last piece) stays whole and the change is cut to the room it leaves
    (repotune.shards.shorten.cut_change). A message of more than half the document would leave
    the change too little: ``subject_ids`` (the message piece of
    ``repotune.shards.render.subject_only(commit)``) stands in for it then; when that is too
    long as well, or not given, the commit has no document (empty list).
    """
    opening, message = piece_ids[0], piece_ids[-1]
    if 2 * len(message) > max_tokens:
        if subject_ids is None or 2 * len(subject_ids) > max_tokens:
            return []
        message = subject_ids
    files = change_files(parts, piece_ids, context_ids)
    change = cut_change(files, max_tokens - len(opening) - len(message), encoder)
    return [*opening, *change, *message]


def prompt_ids(
    commit: Commit,
    task: str,
    template: Template,
    encoder: TextEncoder,
    end: int | None = None,
    max_tokens: int | None = None,
) -> list[int]:
    """The token ids of ``commit``'s prompt for ``task``, as training saw them.

    ``commit``: a curated row (``subject``, ``body``, ``files``); ``task``:
    ``message_to_change`` or ``change_to_message``; ``template``: the one the tokenize stage
    used (stats.json names it); ``encoder``: ``TextEncoder(tokenizer, template.markers)``.
    ``end``: where the prompt ends, in characters of the full rendering
    (``render(commit, task, template)``); by default the end of
    ``render_prompt(commit, task, template)``, the task's marker. ``max_tokens``: a budget;
    a longer prompt keeps its end behind a continuation context (see the module docstring),
    at a piece boundary when one fits, else cut between tokens.

    ``change_to_message`` over the budget: the change is cut to fit, the ``...  not shown``
    marks where something was dropped, exactly as a training document whose message leaves the
    same room (:func:`change_to_message_ids`: with ``max_tokens`` = the block's
    ``seq_len - 1`` less the message's tokens, these ids followed by the message's are that
    document's ids).

    Without a budget the ids are a prefix of the commit's training ids (for a commit longer
    than a block: of its documents joined without their contexts) when ``end`` is at a line
    start before a non-space character, which every evaluation prompt is.
    """
    parts = render_parts(commit, task, template)
    texts = [part.text for part in parts]
    end = len(render_prompt(commit, task, template)) if end is None else end
    header = task_opening(commit, task, template)
    extra = context_texts(parts, header) if max_tokens is not None else []
    encoded = encoder.marked([part.marked for part in parts] + extra)
    ids: list[int] = []
    starts: list[int] = []
    offset = 0
    for text, piece_ids in zip(texts, encoded, strict=False):
        starts.append(len(ids))
        if offset + len(text) <= end:
            ids += piece_ids
            offset += len(text)
        else:
            ids += encoder.head(piece_ids, text[: end - offset])
            offset = end
        if offset >= end:
            break
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    last = len(starts) - 1
    context = encoded[len(texts) :]
    if task == CHANGE_TO_MESSAGE and last == len(parts) - 1:
        asked = ids[starts[last] :]  # the message marker
        files = change_files(parts[:-1], encoded[:last], context)
        change = cut_change(files, max_tokens - len(encoded[0]) - len(asked), encoder)
        return [*encoded[0], *change, *asked][-max_tokens:] if max_tokens else []
    found = contexts(parts, context)
    for index in range(1, last + 1):
        tail = ids[starts[index] :]
        at_start = fit(found[index].at_start, max_tokens)
        if len(at_start) + len(tail) <= max_tokens:
            return [*at_start, *tail]
    inside = list(fit(found[last].inside, max_tokens))
    return inside + ids[len(ids) - max(max_tokens - len(inside), 0) :]
