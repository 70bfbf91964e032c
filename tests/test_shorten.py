"""A change->message commit longer than its room: the change cut to fit with marks where
something was dropped, the message whole (repotune.shards.shorten, repotune.shards.prompt)."""

import re
from dataclasses import replace

import pytest

from repotune.shards.prompt import change_files, change_to_message_ids, context_texts
from repotune.shards.render import (
    CHANGE_TO_MESSAGE,
    MESSAGE_TO_CHANGE,
    PLAIN,
    STARCODER2,
    Template,
    message_part,
    render,
    render_parts,
    subject_only,
    task_opening,
)
from repotune.shards.shorten import FileIds, Unencoded, cut_change, file_ids, omission
from repotune.shards.tokenizer import TextEncoder, train_bpe
from testdata.curated import commit_row, file_change, synthetic_rows

MARK = re.compile(r"^\.\.\. ([\d,]+) (file|hunk|line)s? not shown \.\.\.$")


@pytest.fixture(scope="module", params=[PLAIN, STARCODER2], ids=lambda t: t.name)
def coded(request) -> tuple[Template, TextEncoder]:
    template = request.param
    texts = [render(row, MESSAGE_TO_CHANGE, template) for row in synthetic_rows(60, seed=9)]
    tokenizer = train_bpe(texts, vocab_size=800, markers=template.markers)
    return template, TextEncoder(tokenizer, template.markers)


def _files(row, template: Template, encoder: TextEncoder):
    parts = render_parts(row, CHANGE_TO_MESSAGE, template)
    ids = encoder.marked([p.marked for p in parts])
    context = encoder.marked(context_texts(parts, task_opening(row, CHANGE_TO_MESSAGE, template)))
    return parts, ids, context, change_files(parts, ids, context)


def _read(text: str, row, template: Template) -> dict[str, int]:
    """Check a cut change against the commit's whole one and count what its marks count.

    Every line is a line of the whole change, in order, or a mark; the files shown and those
    the marks count are the commit's files, and in the files shown, the hunks shown and
    those the marks count are their hunks.
    """
    pieces = [p for p in render_parts(row, CHANGE_TO_MESSAGE, template) if p.file_header]
    whole = "".join(piece.text for piece in pieces).splitlines(keepends=True)
    hunk_start = template.hunk_prefix + "@@ "
    first_lines = [
        template.file_header(change).splitlines(keepends=True)[0] for change in row["files"]
    ]
    hunks = [template.file_header(change) for change in row["files"]]
    hunks = [
        sum(
            p.text.count("\n" + hunk_start) + p.text.startswith(hunk_start)
            for p in pieces
            if p.file_header == h
        )
        for h in hunks
    ]
    counts = dict.fromkeys(("file", "hunk", "line"), 0)
    shown_files, shown_hunks, at = [], 0, 0
    for line in text.splitlines(keepends=True):
        mark = MARK.match(line.rstrip("\n"))
        if mark:
            counts[mark[2]] += int(mark[1].replace(",", ""))
            continue
        at = whole.index(line, at) + 1  # a line of the change, in order
        if line in first_lines:
            shown_files.append(first_lines.index(line))
        shown_hunks += line.startswith(hunk_start)
    assert len(shown_files) + counts["file"] == len(row["files"])
    # a hunk cut at a line shows its header and counts its hidden lines, not itself
    assert shown_hunks + counts["hunk"] == sum(hunks[f] for f in shown_files)
    return counts


def test_marks_are_one_line_that_reads_as_no_diff_line() -> None:
    assert omission(1, "file") == "... 1 file not shown ...\n"
    assert omission(1234, "line") == "... 1,234 lines not shown ...\n"
    assert omission(3, "hunk") == "... 3 hunks not shown ...\n"


def test_a_change_that_fits_is_left_whole(coded) -> None:
    template, encoder = coded
    row = next(r for r in synthetic_rows(50, seed=3) if len(r["files"]) == 2)
    _, ids, _, files = _files(row, template, encoder)
    change = [t for piece in ids[1:-1] for t in piece]
    assert cut_change(files, len(change), encoder) == change


def test_a_cut_change_fits_its_room_keeps_its_order_and_counts_what_it_drops(coded) -> None:
    template, encoder = coded
    rows = [r for r in synthetic_rows(400, seed=5) if len(r["files"]) >= 3][:4]
    assert any(sum(f["patch"].count("\n@@ ") for f in r["files"]) > 20 for r in rows)
    seen = set()
    for row in rows:
        _, ids, _, files = _files(row, template, encoder)
        full = sum(len(piece) for piece in ids[1:-1])
        for room in (60, 120, 250, 500, 1000, full - 1):
            change = cut_change(files, room, encoder)
            assert 0 < len(change) <= room
            text = encoder.decode(change)
            counts = _read(text, row, template)
            # The first file is shown, its header whole, unless the room is a few dozen tokens.
            assert text.startswith(template.file_header(row["files"][0])) or room < 100
            seen |= {what for what, count in counts.items() if count}
    assert seen == {"file", "hunk", "line"}


def test_lines_fill_the_room_hunks_leave(coded) -> None:
    template, encoder = coded
    """One file, one hunk too long for the room: its first lines, then the mark."""
    hunk = "@@ -1,2 +1,80 @@\n" + "".join(f"+value_{i} = compute({i})\n" for i in range(80))
    row = commit_row("big", "Add values", [file_change("pkg/values.py", hunk)])
    *_, files = _files(row, template, encoder)
    change = cut_change(files, 150, encoder)
    text = encoder.decode(change)
    *kept, mark = text.split("@@ -1,2 +1,80 @@\n")[1].splitlines(keepends=True)
    assert hunk.split("\n", 1)[1].startswith("".join(kept)) and len(kept) > 3
    assert mark == omission(80 - len(kept), "line")
    assert 150 - len(change) < 20  # the room is used


@pytest.mark.parametrize("accent", ["", "é€𝄞"])
def test_the_line_cut_keeps_the_most_lines_that_fit(coded, accent) -> None:
    """Against every line count tried by encoding the kept lines alone: the cut keeps the
    most whole lines of the hunk that fit the room, for hunks far longer than the room (only
    their first tokens are looked at) and with characters the BPE splits across tokens (whose
    tokens' own texts do not add up to the text)."""
    template, encoder = coded
    lines = [f"+value_{i} = compute({i})  # {accent * (i % 3)}\n" for i in range(400)]
    hunk = "@@ -1,2 +1,400 @@\n" + "".join(lines)
    row = commit_row("long", "Add values", [file_change("pkg/values.py", hunk)])
    *_, files = _files(row, template, encoder)
    header = encoder.decode(files[0].header)
    for room in (40, 90, 200, 333):
        text = encoder.decode(cut_change(files, room, encoder))
        kept = text.removeprefix(header).splitlines(keepends=True)[1:-1]

        def tokens(count: int) -> int:
            shown = header + "@@ -1,2 +1,400 @@\n" + "".join(lines[:count])
            return len(encoder.plain([shown + omission(400 - count, "line")])[0])

        best = next(count for count in range(400) if tokens(count + 1) > room)
        assert len(kept) == best and "".join(kept) == "".join(lines[:best]), (room, len(kept))


def test_the_message_stays_whole_and_the_change_is_cut_to_leave_it_room(coded) -> None:
    template, encoder = coded
    row = next(r for r in synthetic_rows(400, seed=5) if len(r["files"]) >= 3)
    parts, ids, context, _ = _files(row, template, encoder)
    document = change_to_message_ids(parts, ids, context, 255, encoder)
    assert len(document) <= 255
    assert document[: len(ids[0])] == ids[0] and document[-len(ids[-1]) :] == ids[-1]
    # A message of over half the block keeps its subject alone; a subject as long, nothing.
    long_body = {**row, "body": " ".join(["word"] * 400)}
    parts, ids, context, _ = _files(long_body, template, encoder)
    subject = message_part(subject_only(long_body), CHANGE_TO_MESSAGE, template)
    [subject_ids] = encoder([subject.text])
    document = change_to_message_ids(parts, ids, context, 255, encoder, subject_ids)
    assert document[-len(subject_ids) :] == subject_ids and len(document) <= 255
    assert encoder.decode(document).endswith(template.c2m_sep + row["subject"] + "\n")
    assert change_to_message_ids(parts, ids, context, 255, encoder) == []  # none given
    too_short = 2 * len(subject_ids) - 1
    assert change_to_message_ids(parts, ids, context, too_short, encoder, subject_ids) == []


def test_the_change_is_shown_from_its_start(coded) -> None:
    """Whole hunks in diff order up to the first that does not fit, then that one's first
    lines: a later hunk small enough for the room left is not shown, so the cut needs the ids
    of no hunk after it (the tokenize stage does not encode them)."""
    template, encoder = coded
    small = "@@ -1,1 +1,2 @@\n x = 1\n+y = 2\n"
    large = "@@ -10,1 +10,60 @@\n" + "".join(f"+value_{i} = compute({i})\n" for i in range(60))
    later = "@@ -90,1 +90,2 @@\n z = 3\n+w = 4\n"
    row = commit_row("order", "Add values", [file_change("pkg/values.py", small + large + later)])
    *_, files = _files(row, template, encoder)
    room = len(files[0].header) + len(files[0].hunks[0]) + 3 * len(files[0].hunks[2])
    text = encoder.decode(cut_change(files, room, encoder))
    assert small.split("\n", 1)[1] in text and "+value_0 = compute(0)\n" in text
    assert "+w = 4" not in text and text.endswith(omission(1, "hunk"))
    cut_files = [replace(file, hunks=[*file.hunks[:2], None]) for file in files]
    assert cut_change(cut_files, room, encoder) == cut_change(files, room, encoder)


def test_file_ids_split_a_header_from_its_first_hunk_or_say_why_not() -> None:
    """The header's own ids split off the first piece when they are its prefix; otherwise the
    file is atomic (shown with its first hunk or not at all). A first piece not encoded is
    judged by its probe (header and first hunk line); a header alone has no hunk."""
    header, hunk, more = [1, 2], [3, 4, 5], [6, 7]
    split = file_ids([header + hunk, more], ["Hh@a\n", "@b\n"], header, 2)
    assert split == FileIds(header, [hunk, more], ["@a\n", "@b\n"])
    merged = file_ids([[9, *hunk], more], ["Hh@a\n", "@b\n"], header, 2)
    assert merged == FileIds([], [[9, *hunk], more], ["Hh@a\n", "@b\n"], atomic=True)
    assert file_ids([header], ["Hh"], header, 2) == FileIds(header, [], [])
    probed = file_ids([None, more], ["Hh@a\n", "@b\n"], header, 2, probe=[*header, 3])
    assert probed == FileIds(header, [None, more], ["@a\n", "@b\n"])
    assert probed.hunk(1) == more
    with pytest.raises(Unencoded):
        probed.hunk(0)
    atomic = file_ids([None, more], ["Hh@a\n", "@b\n"], header, 2, probe=[9, 3])
    assert atomic == FileIds([], [None, more], ["Hh@a\n", "@b\n"], atomic=True)
    with pytest.raises(ValueError, match="needs its probe"):
        file_ids([None], ["Hh@a\n"], header, 2)


def test_a_file_whose_header_does_not_fit_between_two_that_do_is_marked(coded) -> None:
    """Headers take at most half the room, in diff order; a long one in the middle is dropped
    and a mark stands where it was, before the next file shown."""
    template, encoder = coded
    hunk = "@@ -1 +1 @@\n-x = 1\n+x = 2\n"
    long_path = "pkg/" + "/".join(f"very_long_directory_name_{i}" for i in range(24)) + "/m.py"
    files = [file_change("a.py", hunk), file_change(long_path, hunk), file_change("c.py", hunk)]
    row = commit_row("middle", "Touch three", files)
    *_, cut_files = _files(row, template, encoder)
    whole = sum(len(f.header) + sum(map(len, f.hunks)) for f in cut_files)
    room = 2 * (len(cut_files[0].header) + len(cut_files[2].header)) + 160
    assert room < whole and 2 * len(cut_files[1].header) > room
    text = encoder.decode(cut_change(cut_files, room, encoder))
    shown_c = template.file_header(files[2]).splitlines(keepends=True)[0]
    assert omission(1, "file") + shown_c in text and long_path not in text


LAST = "+total = " + " + ".join(f"compute(value_{i}, scale={i})" for i in range(4)) + "\n"
"""A line longer than a line mark: all lines but it, and the mark, take less than the hunk."""


@pytest.mark.parametrize("added", [4, 0], ids=["6 lines", "2 lines"])
def test_every_room_keeps_the_most_lines_of_a_short_hunk_that_fit(coded, added) -> None:
    """A hunk of a few lines, every room from its file header's up to one short of the whole:
    the cut shows the most leading lines that fit with the mark for the rest, from the
    ``@@`` line alone to all but the last line, or the header and a hunk mark when not even
    the ``@@`` line fits."""
    template, encoder = coded
    lines = ["@@ -1,2 +1,6 @@\n", *(f"+value_{i} = {i}\n" for i in range(added)), LAST]
    row = commit_row("short", "Add values", [file_change("v.py", "".join(lines))])
    *_, files = _files(row, template, encoder)
    header = encoder.decode(files[0].header)
    whole = len(files[0].header) + len(files[0].hunks[0])
    seen = set()
    for room in range(len(files[0].header) + len(encoder.plain([omission(1, "hunk")])[0]), whole):
        text = encoder.decode(cut_change(files, room, encoder))
        assert text.startswith(header)
        body = text.removeprefix(header).removeprefix(template.hunk_prefix)

        def tokens(count: int) -> int:
            shown = "".join(lines[:count]) + omission(len(lines) - count, "line")
            return len(encoder([header + template.hunk_prefix + shown])[0])

        best = max((c for c in range(1, len(lines)) if tokens(c) <= room), default=0)
        if best == 0:
            assert body == omission(1, "hunk"), (room, body)
        else:
            assert body == "".join(lines[:best]) + omission(len(lines) - best, "line"), room
        seen.add(best)
    assert {1, len(lines) - 1} <= seen, seen
