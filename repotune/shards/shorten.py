"""A change longer than its room, cut down to fit, with a mark wherever something was dropped.

A change->message document must hold the message *and* the change it describes: a message
beside a few stray lines (or none) teaches the model nothing about reading a diff. So when a
commit is longer than a block, the message stays whole and the change is cut, coarse units
first:

1. files: the first file's header, and the others' that fit half the room, in diff order
   (paths say where a change is, hunks what it is: neither may crowd out the other); the
   other files are dropped;
2. hunks: the hunks of the files kept, whole, in diff order, up to the first that does not
   fit the room left; that one and every later hunk are dropped (the change is shown from its
   start, as a reader reads it, and what is cut is its end: which hunks are shown is known
   from the lengths of those shown and of one more, so the tokenize stage need not encode
   the rest, repotune.shards.stage);
3. lines: the room left goes to the leading lines of that first hunk dropped;
4. marks: each run of dropped hunks, each run of dropped files and the rest of a hunk cut at a line
   leaves one line that says so: ``... 3 hunks not shown ...``, ``... 12 files not shown ...``,
   ``... 40 lines not shown ...`` (:func:`omission`). No line of a unified diff starts with
   ``...``, so a mark never reads as code, and the model learns that what it is shown of a
   change may be partial.

Training (repotune.shards.stage) and inference (repotune.shards.prompt.prompt_ids with a budget,
which ``repotune suggest`` and the evaluation call) both cut with :func:`cut_change`, so a
prompt over budget is the very text the model learnt from, marks and all.

It works on token ids: a file's header and each of its hunks are encoded apart (the pieces of
repotune.shards.render), and a mark is encoded on its own as plain text, so a cut change's ids
are the kept pieces' ids and the marks' ids back to back; a hunk cut after a line keeps its
ids up to there (:meth:`repotune.shards.tokenizer.TextEncoder.head`: a newline joined to the
next line's indentation is encoded again, alone).
"""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from repotune.shards.tokenizer import TextEncoder

MARK = "... {count:,} {what} not shown ...\n"
"""The line that stands where something was dropped (``what``: file, hunk, line)."""


def omission(count: int, what: str) -> str:
    """The mark for ``count`` dropped ``what`` (``file``, ``hunk`` or ``line``)."""
    return MARK.format(count=count, what=what if count == 1 else what + "s")


class Unencoded(LookupError):
    """The cut needs the ids of a hunk its caller did not encode: encode the change whole and
    cut again (the tokenize stage encodes a long change only as far as a cut can reach)."""


@dataclass(frozen=True)
class FileIds:
    """One file of a change, encoded: its header alone and each of its hunks.

    ``header + hunks[0]`` are the ids of the file's first render piece, each further hunk the
    ids of a piece of its own; ``None`` for a hunk not encoded (its piece lies past where the
    cut could reach; :class:`Unencoded` if it does). ``atomic``: the header's own ids are not a
    prefix of the first piece's (a tokenizer merged across the two), so the header is never
    shown without its first hunk: ``header`` is then empty and ``hunks[0]`` the whole first
    piece. ``texts``: each hunk's text (what its ids spell: a line cut reads the lines there).
    """

    header: list[int]
    hunks: list[list[int] | None]
    texts: list[str]
    atomic: bool = False

    def hunk(self, index: int) -> list[int]:
        """The ids of hunk ``index``; :class:`Unencoded` if it was not encoded."""
        ids = self.hunks[index]
        if ids is None:
            raise Unencoded(index)
        return ids


def file_ids(
    pieces: Sequence[list[int] | None],
    texts: Sequence[str],
    header: list[int],
    header_size: int,
    probe: list[int] | None = None,
) -> FileIds:
    """A file's :class:`FileIds` from its render pieces' ids (``None``: not encoded) and texts
    (the first's begins with the header's ``header_size`` characters) and its header's own
    ids. A first piece not encoded (it holds a hunk: a header alone is always encoded) is
    judged by ``probe``, the ids of its header and its hunk's first line: a tokenizer that
    splits there splits the header from the whole hunk too (a byte-level pre-tokenizer always
    splits after a newline followed by ``@@``)."""
    (first, *rest), (text, *rest_texts) = pieces, texts
    start = probe if first is None else first
    if start is None:
        raise ValueError("a file whose first piece is not encoded needs its probe")
    if start[: len(header)] != header:
        return FileIds([], [first, *rest], [text, *rest_texts], atomic=True)
    if not text[header_size:]:
        return FileIds(header, rest, rest_texts)
    hunk = None if first is None else first[len(header) :]
    return FileIds(header, [hunk, *rest], [text[header_size:], *rest_texts])


class _Cache:
    """What a cut asks for again and again: the marks' ids, a hunk's lines, a hunk's ids up to
    a line. A cut keeps at most ``room`` tokens, so only a hunk's first ``room + 1`` tokens are
    ever looked at one by one (:meth:`fits`)."""

    def __init__(self, encoder: TextEncoder, files: Sequence[FileIds], room: int) -> None:
        self.encoder, self.files, self.room = encoder, files, room
        self._hunks: dict[tuple[int, int], tuple[list[str], list[int], list[int]]] = {}
        self._heads: dict[tuple[int, int, int], list[int]] = {}

    def mark(self, count: int, what: str) -> list[int]:
        return self.encoder.remembered(omission(count, what)) if count else []

    def _hunk(self, file: int, hunk: int) -> tuple[list[str], list[int], list[int]]:
        """The hunk's lines, where they end in its text, and where its first ``room + 1``
        tokens end (TextEncoder.token_ends)."""
        if (file, hunk) not in self._hunks:
            ids = self.files[file].hunk(hunk)
            text = self.files[file].texts[hunk]
            lines = text.splitlines(keepends=True)
            ends = list(itertools.accumulate(map(len, lines)))
            tokens = self.encoder.token_ends(ids[: self.room + 1], text)
            self._hunks[file, hunk] = lines, ends, tokens
        return self._hunks[file, hunk]

    def lines(self, file: int, hunk: int) -> list[str]:
        return self._hunk(file, hunk)[0]

    def fits(self, file: int, hunk: int, lines: int) -> bool:
        """Whether the hunk's first ``lines`` lines may take at most ``room`` tokens: False
        when they reach past its first ``room + 1`` tokens (they take more than ``room``)."""
        _, ends, tokens = self._hunk(file, hunk)
        longer = len(tokens) == self.room + 1  # and those tokens' texts spell the text
        return not (longer and ends[lines - 1] >= tokens[-1])

    def head(self, file: int, hunk: int, lines: int) -> list[int]:
        """The ids of the hunk's first ``lines`` lines and the mark for the rest."""
        if (file, hunk, lines) not in self._heads:
            text, _, tokens = self._hunk(file, hunk)
            ids = self.files[file].hunk(hunk)
            head = self.encoder.head(ids, "".join(text[:lines]), tokens)
            self._heads[file, hunk, lines] = head + self.mark(len(text) - lines, "line")
        return self._heads[file, hunk, lines]


@dataclass
class _Plan:
    """What is shown: each file or not, each hunk whole or not, and the hunk shown in part
    (``(file, hunk, line runs kept)``)."""

    shown: list[bool]
    kept: list[list[bool]]
    partial: tuple[int, int, int] | None = None
    """``(file, hunk, lines)``: that hunk shows its first ``lines`` lines."""

    def drop_last(self, files: Sequence[FileIds]) -> bool:
        """Drop the last hunk kept whole, or else the last file shown; False when none is."""
        for number in range(len(files) - 1, -1, -1):
            if not self.shown[number]:
                continue
            kept = self.kept[number]
            last = max((i for i, whole in enumerate(kept) if whole), default=-1)
            if last > 0 or (last == 0 and not files[number].atomic):
                kept[last] = False
            else:  # nothing kept, or an atomic file's first piece: the file goes
                self.shown[number] = False
                self.kept[number] = [False] * len(kept)
            return True
        return False


def _assemble(files: Sequence[FileIds], plan: _Plan, cache: _Cache) -> list[int]:
    """The ids of the change as ``plan`` shows it."""
    out: list[int] = []
    dropped_files = 0
    for number, (file, shown, kept) in enumerate(zip(files, plan.shown, plan.kept, strict=True)):
        if not shown:
            dropped_files += 1
            continue
        out += cache.mark(dropped_files, "file")
        dropped_files = 0
        out += file.header
        dropped = 0
        for index, whole in enumerate(kept):
            partial = plan.partial if plan.partial and plan.partial[:2] == (number, index) else None
            if not whole and partial is None:
                dropped += 1
                continue
            out += cache.mark(dropped, "hunk")
            dropped = 0
            if whole:
                out += file.hunk(index)
                continue
            out += cache.head(*partial)
        out += cache.mark(dropped, "hunk")
    return out + cache.mark(dropped_files, "file")


def _run_marks(kept: Sequence[bool], cache: _Cache) -> int:
    """The tokens of the marks that stand for a file's runs of dropped hunks."""
    total = run = 0
    for whole in (*kept, True):
        if whole:
            total += len(cache.mark(run, "hunk"))
            run = 0
        else:
            run += 1
    return total


def _whole_units(files: Sequence[FileIds], room: int, cache: _Cache) -> _Plan:
    """Steps 1 and 2 of the module docstring: the headers, then the whole hunks in diff order
    up to the first that does not fit, reckoning the marks exactly."""
    plan = _Plan([False] * len(files), [[False] * len(f.hunks) for f in files])
    used = dropped = 0
    for number, file in enumerate(files):
        plan.kept[number][: int(file.atomic)] = [True] * int(file.atomic)
        cost = len(file.header) + (len(file.hunk(0)) if file.atomic else 0)
        cost += _run_marks(plan.kept[number], cache) + len(cache.mark(dropped, "file"))
        after = len(cache.mark(len(files) - number - 1, "file"))  # were the rest all dropped
        if used + cost + after <= (room if number == 0 else room // 2):
            plan.shown[number], used, dropped = True, used + cost, 0
        else:
            plan.kept[number] = [False] * len(file.hunks)
            dropped += 1
    used += len(cache.mark(dropped, "file"))
    for number, file in enumerate(files):
        if not plan.shown[number]:
            continue
        kept = plan.kept[number]
        for index in range(int(file.atomic), len(file.hunks)):
            before = _run_marks(kept, cache)
            kept[index] = True
            cost = len(file.hunk(index)) + _run_marks(kept, cache) - before
            if used + cost > room:
                kept[index] = False
                return plan
            used += cost
    return plan


def cut_change(files: Sequence[FileIds], room: int, encoder: TextEncoder) -> list[int]:
    """The ids of a change (its ``files``) cut to at most ``room`` tokens, as the module
    docstring says; the whole change when it fits. ``encoder``: the one that encoded the
    files (marks are encoded as plain text). :class:`Unencoded` when it needs a hunk the
    files lack (one past those the cut reaches, or any when the known ones fit the room)."""
    known = [ids for file in files for ids in (file.header, *file.hunks) if ids is not None]
    whole = list(itertools.chain.from_iterable(known))
    if len(whole) <= room:
        if len(known) < sum(1 + len(file.hunks) for file in files):
            raise Unencoded("the change's encoded hunks fit the room")
        return whole
    cache = _Cache(encoder, files, room)
    plan = _whole_units(files, room, cache)
    ids = _assemble(files, plan, cache)
    while len(ids) > room:
        if not plan.drop_last(files):
            return []
        ids = _assemble(files, plan, cache)
    # Step 3: the leading lines of the first hunk dropped in a file shown.
    target = next(
        (
            (number, index)
            for number, (shown, kept) in enumerate(zip(plan.shown, plan.kept, strict=True))
            if shown
            for index, whole_hunk in enumerate(kept)
            if not whole_hunk
        ),
        None,
    )
    if target is None:
        return ids
    lines = len(cache.lines(*target))
    if lines < 2:
        return ids
    # The hunk shown in part is one unit whatever its length: the rest of the document does
    # not change with how many of its lines are kept.
    plan.partial = (*target, 1)
    rest = len(_assemble(files, plan, cache)) - len(cache.head(*target, 1))
    low, high = 0, lines - 1  # the most lines that fit, short of the whole hunk
    while low < high:
        middle = (low + high + 1) // 2
        if cache.fits(*target, middle) and rest + len(cache.head(*target, middle)) <= room:
            low = middle
        else:
            high = middle - 1
    if low == 0:
        return ids
    plan.partial = (*target, low)
    return _assemble(files, plan, cache)
