"""Parse the output of one streaming ``git log --raw -p -z`` into commit records.

git does the expensive part (reading objects and diffing); this module only splits its output,
so it has to be cheap: byte-level ``find``/``split``, no per-line Python loops over patches.

Each commit starts with the NUL-delimited header written by :data:`FORMAT`. NUL cannot occur in
commit messages, in ``-z`` raw records or in text patches, so a header marker that starts with
two NULs cannot be forged by repository content. After the header come the ``--raw`` records
(one per changed path, with modes, status and unquoted paths) and then the patch, one
``diff --git`` section per raw record in the same order.
"""

import codecs
import hashlib
from collections.abc import Iterator
from functools import lru_cache
from typing import IO, NamedTuple

# The diff format the parser reads, shared by extraction (git log) and `repotune suggest`
# (git diff --cached): NUL-separated raw records, then full-sha patches with a/ b/ prefixes and
# nothing a user's config or a diff driver could change.
DIFF_FORMAT = (
    "-z",
    "--raw",
    "--patch",
    "--no-abbrev",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)

MARKER = b"\x00\x00repotune-commit\x00"
FORMAT = "%x00%x00repotune-commit%x00%H%x00%P%x00%an%x00%ae%x00%ad%x00%cn%x00%cd%x00%e%x00%B%x00"
HEADER_FIELDS = 9
READ_SIZE = 1 << 20


class FileChange(NamedTuple):
    """One changed path of a commit; see docs/data-contracts.md for each field.

    A tuple, in the order of ``commit_table.FILE_CHANGE``, so a batch's columns are one
    ``zip(*changes)`` away.
    """

    path: str
    old_path: str | None
    change_type: str
    old_mode: str | None
    new_mode: str | None
    similarity: int | None
    additions: int | None
    deletions: int | None
    is_binary: bool
    is_submodule: bool
    patch: str | None
    patch_bytes: int
    patch_truncated: bool


class Commit(NamedTuple):
    """One commit as extracted; times are Unix seconds plus the original offset in minutes."""

    sha: str
    parents: list[str]
    author_name: str
    author_email: str
    author_time: int
    author_offset: int
    committer_name: str
    committer_time: int
    committer_offset: int
    encoding: str | None
    subject: str
    body: str
    files: list[FileChange]


@lru_cache(maxsize=4096)
def email_sha256(email: str) -> str:
    """Hex sha256 of the normalised e-mail: tells authors apart without storing it."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def iter_commits(stream: IO[bytes], max_patch_bytes: int) -> Iterator[Commit]:
    """Yield the commits in a ``git log`` output stream, reading it in bounded chunks.

    The buffer is compacted once per chunk read, never per commit, and each byte is searched
    for the marker once, so a history of many small commits and one huge commit are both
    linear in the output size.
    """
    buffer = bytearray()
    start = 0  # offset of the current commit's marker in buffer
    search = len(MARKER)  # where the next marker search begins
    while chunk := stream.read(READ_SIZE):
        if start:
            del buffer[:start]
            search -= start
            start = 0
        buffer += chunk
        while (end := buffer.find(MARKER, search)) != -1:
            yield parse_commit(bytes(buffer[start + len(MARKER) : end]), max_patch_bytes)
            start = end
            search = end + len(MARKER)
        search = max(search, len(buffer) - len(MARKER) + 1)
    if buffer[start:].startswith(MARKER):
        yield parse_commit(bytes(buffer[start + len(MARKER) :]), max_patch_bytes)


def parse_commit(record: bytes, max_patch_bytes: int) -> Commit:
    """Parse one commit's header, raw records and patch (the bytes after :data:`MARKER`)."""
    fields = record.split(b"\x00", HEADER_FIELDS)
    (sha, parents, a_name, a_mail, a_date, c_name, c_date, encoding, message, rest) = fields
    declared = encoding.decode("ascii", "replace") or None
    subject, body = split_message(decode_text(message, declared))
    author_time, author_offset = _raw_date(a_date)
    committer_time, committer_offset = _raw_date(c_date)
    raw, patch = _split_raw_and_patch(rest.lstrip(b"\x00\n").rstrip(b"\x00"))
    sections = _patch_sections(patch)
    files = [
        _file_change(entry, parts, max_patch_bytes)
        for entry, parts in zip(raw, _align(raw, sections), strict=True)
    ]
    return Commit(
        sha=sha.decode("ascii"),
        parents=parents.decode("ascii").split(),
        author_name=decode_text(a_name, declared),
        author_email=decode_text(a_mail, declared),
        author_time=author_time,
        author_offset=author_offset,
        committer_name=decode_text(c_name, declared),
        committer_time=committer_time,
        committer_offset=committer_offset,
        encoding=declared,
        subject=subject,
        body=body,
        files=files,
    )


def split_message(message: str) -> tuple[str, str]:
    """Split a message like git's ``%s``/``%b``: the first paragraph joined into one line."""
    lines = message.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    subject_lines: list[str] = []
    while lines and lines[0].strip():
        subject_lines.append(lines.pop(0).strip())
    return " ".join(subject_lines), "\n".join(lines).strip()


def decode_text(data: bytes, declared: str | None) -> str:
    """Decode text that git re-encoded to UTF-8 from the commit's declared encoding.

    When git's conversion failed (bytes invalid in the declared encoding) it passes the
    original bytes through; those are decoded by the declared encoding where Python knows it,
    else as UTF-8, with undecodable bytes replaced by U+FFFD. Never raises.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode(_codec(declared), errors="replace")


def _codec(declared: str | None) -> str:
    if declared:
        try:
            return codecs.lookup(declared).name
        except LookupError:
            pass
    return "utf-8"


def _raw_date(field: bytes) -> tuple[int, int]:
    """``1700000000 +0130`` -> (1700000000, 90)."""
    seconds, _, zone = field.partition(b" ")
    sign = -1 if zone.startswith(b"-") else 1
    digits = zone.lstrip(b"+-").rjust(4, b"0")
    return int(seconds), sign * (int(digits[:2]) * 60 + int(digits[2:4]))


class _RawEntry(NamedTuple):
    old_mode: str
    new_mode: str
    status: str
    similarity: int | None
    path: str
    old_path: str | None


def _split_raw_and_patch(rest: bytes) -> tuple[list[_RawEntry], bytes]:
    """Read the ``-z`` raw records (``:mode mode sha sha status NUL path NUL [path NUL]``)."""
    entries: list[_RawEntry] = []
    position = 0
    while rest.startswith(b":", position):
        meta_end = rest.index(b"\x00", position)
        old_mode, new_mode, _, _, status = rest[position + 1 : meta_end].split(b" ")
        first_end = rest.index(b"\x00", meta_end + 1)
        first = rest[meta_end + 1 : first_end].decode("utf-8", "replace")
        position = first_end + 1
        letter = status[:1].decode("ascii")
        second = None
        if letter in "RC":
            second_end = rest.index(b"\x00", position)
            second = rest[position:second_end].decode("utf-8", "replace")
            position = second_end + 1
        entries.append(
            _RawEntry(
                old_mode=old_mode.decode("ascii"),
                new_mode=new_mode.decode("ascii"),
                status=letter,
                similarity=int(status[1:]) if status[1:] else None,
                path=second if second is not None else first,
                old_path=first if second is not None else None,
            )
        )
    return entries, rest[position:].lstrip(b"\x00\n")


def _patch_sections(patch: bytes) -> list[bytes]:
    """Cut the patch at each ``diff --git`` line (content lines start with `` +-@\\``)."""
    if not patch:
        return []
    sections = []
    begin = 0
    while (end := patch.find(b"\ndiff --git ", begin)) != -1:
        sections.append(patch[begin : end + 1])
        begin = end + 1
    sections.append(patch[begin:])
    return sections


def _align(raw: list[_RawEntry], sections: list[bytes]) -> list[list[bytes]]:
    """The patch sections of each raw record.

    git prints one section per raw record, except that a type change (``T``, e.g. a symlink
    replaced by a file) is shown as a deletion section followed by a creation section.
    """
    if len(sections) == len(raw):
        return [[section] for section in sections]
    aligned: list[list[bytes]] = []
    position = 0
    for entry in raw:
        taken = (
            2 if entry.status == "T" and b"\ndeleted file mode" in sections[position][:512] else 1
        )
        aligned.append(sections[position : position + taken])
        position += taken
    return aligned


def _head_and_hunks(sections: list[bytes]) -> tuple[bytes, bytes]:
    """The extended headers and the hunks (from the first ``@@`` line) of a path's sections."""
    heads, bodies = [], []
    for section in sections:
        hunks_at = section.find(b"\n@@")
        if hunks_at == -1:
            heads.append(section)
        else:
            heads.append(section[:hunks_at])
            bodies.append(section[hunks_at + 1 :])
    return b"".join(heads), b"".join(bodies)


def _file_change(entry: _RawEntry, sections: list[bytes], max_patch_bytes: int) -> FileChange:
    head, hunks = _head_and_hunks(sections)
    old_mode = None if entry.old_mode == "000000" else entry.old_mode
    new_mode = None if entry.new_mode == "000000" else entry.new_mode
    submodule = entry.old_mode == "160000" or entry.new_mode == "160000"
    if b"\nBinary files " in head or b"\nGIT binary patch" in head:
        return FileChange(
            entry.path, entry.old_path, entry.status, old_mode, new_mode, entry.similarity,
            None, None, True, submodule, None, 0, False,
        )  # fmt: skip
    size = len(hunks)
    additions = hunks.count(b"\n+")
    deletions = hunks.count(b"\n-")
    truncated = size > max_patch_bytes
    if truncated:
        cut = hunks.rfind(b"\n", 0, max_patch_bytes)
        hunks = hunks[: cut + 1 if cut > 0 else max_patch_bytes]
    return FileChange(
        entry.path, entry.old_path, entry.status, old_mode, new_mode, entry.similarity,
        additions, deletions, False, submodule, hunks.decode("utf-8", "replace"), size, truncated,
    )  # fmt: skip
