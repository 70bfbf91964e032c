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
  (:func:`change_to_message_ids`, repotune.shards.shorten: shown from its start, whole
  hunks, then lines, a mark left where something went). A prompt over its budget is cut the same
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


CHARACTERS_PER_TOKEN = 4
"""How far the tokenize stage encodes a long change->message commit's change before it knows
its length: this many characters a token of the block. A cut shows the change's first hunks
(repotune.shards.shorten), so the rest need not be encoded once the pieces encoded are longer
than the block. A commit whose first pieces are shorter gets the rest encoded too: this number
sets the speed, never the result (BENCHMARKS.md, tokenization)."""


def encoded_first(parts: Sequence[Piece], task: str, max_tokens: int) -> list[bool]:
    """Which pieces of a rendering to encode before its length is known (all, for most).

    A ``change_to_message`` rendering of more than :data:`CHARACTERS_PER_TOKEN` characters a
    token of ``max_tokens`` has its change's pieces encoded up to that many characters (the
    piece that crosses included); the opening, the message and a file's header with no hunk
    are always encoded; the later pieces are not, and a file whose first piece is not gets
    its :func:`probe_texts` encoded. :func:`change_to_message_ids` then cuts the change, or
    says (repotune.shards.shorten.Unencoded) that it needs the rest.
    """
    if task != CHANGE_TO_MESSAGE:
        return [True] * len(parts)
    budget = CHARACTERS_PER_TOKEN * max_tokens
    sizes = [sum(map(len, part.marked)) for part in parts]
    wanted, seen = [], 0
    for part, size in zip(parts, sizes, strict=True):
        alone = not part.header or (part.opens_file and size == len(part.file_header))
        wanted.append(alone or seen < budget)
        seen += size if part.header else 0
    return wanted


def probe_texts(parts: Sequence[Piece], piece_ids: Sequence[list[int] | None]) -> list[Marked]:
    """For each file whose first piece was not encoded (``None`` in ``piece_ids``): its header
    and its first hunk's first line, whose ids say whether the tokenizer splits the header
    from the hunk (repotune.shards.shorten.file_ids)."""
    return [
        split(part.marked, part.text.index("\n", len(part.file_header)) + 1)[0]
        for part, ids in zip(parts, piece_ids, strict=True)
        if part.opens_file and ids is None
    ]


def change_files(
    parts: Sequence[Piece],
    piece_ids: Sequence[list[int] | None],
    context_ids: Sequence[list[int]],
    probe_ids: Sequence[list[int]] = (),
) -> list[FileIds]:
    """The files of a rendering as repotune.shards.shorten cuts them: each file's pieces' ids
    (``piece_ids``, same order as ``parts``; ``None``: not encoded) and its header's own ids,
    from the ids of :func:`context_texts` (``context_ids``: its first line and its other
    lines); ``probe_ids``: those of the rendering's :func:`probe_texts`."""
    names = (p.header for p in parts if p.opens_file)
    lines = iter(context_ids[1:])
    headers = {name: next(lines) + next(lines) for name in names}
    probes = iter(probe_ids)
    grouped: list[tuple[Piece, list[list[int] | None], list[str], list[int] | None]] = []
    for part, ids in zip(parts, piece_ids, strict=True):
        if part.opens_file:
            grouped.append((part, [ids], [part.text], next(probes) if ids is None else None))
        elif part.header:
            grouped[-1][1].append(ids)
            grouped[-1][2].append(part.text)
    return [
        file_ids(pieces, texts, headers[first.header], len(first.file_header), probe)
        for first, pieces, texts, probe in grouped
    ]


def change_to_message_ids(
    parts: Sequence[Piece],
    piece_ids: Sequence[list[int] | None],
    context_ids: Sequence[list[int]],
    max_tokens: int,
    encoder: TextEncoder,
    subject_ids: list[int] | None = None,
    probe_ids: Sequence[list[int]] = (),
) -> list[int]:
    """The one training document of a ``change_to_message`` rendering (``parts``, encoded as
    ``piece_ids``, with the ids of its :func:`context_texts`) in at most ``max_tokens``.

    The message (the last piece) stays whole and the change is cut to the room it leaves
    (repotune.shards.shorten.cut_change). A message of more than half the document would leave
    the change too little: ``subject_ids`` (the message piece of
    ``repotune.shards.render.subject_only(commit)``) stands in for it then; when that is too
    long as well, or not given, the commit has no document (empty list). Pieces not encoded
    (``None``, see :func:`encoded_first`; ``probe_ids``: the ids of its :func:`probe_texts`)
    raise repotune.shards.shorten.Unencoded if the cut needs them.
    """
    opening, message = piece_ids[0], piece_ids[-1]
    if 2 * len(message) > max_tokens:
        if subject_ids is None or 2 * len(subject_ids) > max_tokens:
            return []
        message = subject_ids
    files = change_files(parts, piece_ids, context_ids, probe_ids)
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
