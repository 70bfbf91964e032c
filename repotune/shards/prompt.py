"""A commit's token ids: built one way for training documents and for every prompt.

A byte-level pre-tokenizer looks ahead at whitespace: ``" \\n"`` followed by ``"@@"`` is split
differently when it ends the text than when more text follows. Encoding a prompt on its own
therefore gives other ids than the same text had inside the training document (a blank
context line at a hunk's end is enough). So nothing here encodes "the prompt text": a commit
is rendered in pieces (repotune.shards.render.render_parts), the pieces are encoded one by
one, and a prompt is the leading part of those ids, exactly as the tokenize stage builds the
commit's documents. The prompt ids are then a prefix of the commit's training ids.

Continuations: a commit longer than a block is split into documents (repotune.shards.packing);
each document after the first starts with a context: the task header
(repotune.shards.render.task_header) and the header of the file it continues (its
``diff --git`` line and the mode/rename/``---``/``+++`` lines). A context never takes more
than half a document: when the whole file header does not fit, only its first line is kept,
then only the task header; a document too short for even that (tiny blocks) has none. A
prompt longer than its budget is cut the same way, so it reads like a training continuation
rather than text that starts mid-line.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from repotune.shards.packing import Context, fit
from repotune.shards.render import Commit, Piece, Template, render_parts, render_prompt, task_header
from repotune.shards.tokenizer import TextEncoder


def line_ends(encoder: TextEncoder, vocab_size: int) -> np.ndarray:
    """For each token id, whether its text ends in a newline (where a long commit may be cut)."""
    return np.array([encoder.decode([i]).endswith("\n") for i in range(vocab_size)], dtype=bool)


def context_texts(parts: Sequence[Piece], header: str) -> list[str]:
    """The texts a long commit's contexts are made of, to encode along with its pieces.

    The task header, then for each file its header's first line and its other lines: the
    first line ends in a newline and the next starts with a non-space, so encoding the two
    apart gives the ids of the whole header.
    """
    texts = [header]
    for file_header in dict.fromkeys(p.file_header for p in parts if p.file_header):
        first, _, rest = file_header.partition("\n")
        texts += [first + "\n", rest]
    return texts


def contexts(parts: Sequence[Piece], context_ids: Sequence[list[int]]) -> list[Context]:
    """Each piece's :class:`Context`, from the ids of :func:`context_texts` (same order).

    Options, longest first: the task header with the whole file header, with only the file
    header's first line, alone (a document takes the first that fits half of it).
    """
    header, file_ids = context_ids[0], iter(context_ids[1:])
    files: Mapping[str, tuple[list[int], list[int]]] = {
        name: (next(file_ids), next(file_ids))
        for name in dict.fromkeys(p.file_header for p in parts if p.file_header)
    }
    task = (header,)
    out = []
    for part in parts:
        if not part.file_header:
            out.append(Context(task, task))
            continue
        first, rest = files[part.file_header]
        inside = (header + first + rest, header + first, header)
        out.append(Context(task if part.opens_file else inside, inside))
    return out


def _head(ids: list[int], text: str, encoder: TextEncoder) -> list[int]:
    """The leading ids of a piece that spell ``text`` (a prefix of the piece).

    Cut at a line start before a non-space (every prompt's end), a byte-level BPE has a token
    boundary there and the result is a prefix of ``ids``. Otherwise the ids up to the last
    boundary before the end are kept and the rest of ``text`` is encoded on its own.
    """
    low, high = 0, len(ids)
    while low < high:  # the most tokens whose text is no longer than ``text``
        middle = (low + high + 1) // 2
        if len(encoder.decode(ids[:middle])) <= len(text):
            low = middle
        else:
            high = middle - 1
    while low and not text.startswith(encoder.decode(ids[:low])):
        low -= 1
    done = encoder.decode(ids[:low])
    return ids[:low] + (encoder([text[len(done) :]])[0] if len(done) < len(text) else [])


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

    Without a budget the ids are a prefix of the commit's training ids (for a commit longer
    than a block: of its documents joined without their contexts) when ``end`` is at a line
    start before a non-space character, which every evaluation prompt is.
    """
    parts = render_parts(commit, task, template)
    texts = [part.text for part in parts]
    end = len(render_prompt(commit, task, template)) if end is None else end
    header = task_header(commit, task, template)
    extra = context_texts(parts, header) if max_tokens is not None else []
    encoded = encoder(texts + extra)
    ids: list[int] = []
    starts: list[int] = []
    offset = 0
    for text, piece_ids in zip(texts, encoded, strict=False):
        starts.append(len(ids))
        if offset + len(text) <= end:
            ids += piece_ids
            offset += len(text)
        else:
            ids += _head(piece_ids, text[: end - offset], encoder)
            offset = end
        if offset >= end:
            break
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    last = len(starts) - 1
    context = contexts(parts, encoded[len(texts) :])
    for index in range(1, last + 1):
        tail = ids[starts[index] :]
        at_start = fit(context[index].at_start, max_tokens)
        if len(at_start) + len(tail) <= max_tokens:
            return [*at_start, *tail]
    inside = list(fit(context[last].inside, max_tokens))
    return inside + ids[len(ids) - max(max_tokens - len(inside), 0) :]
