"""Commit -> text: the one place that decides what a commit looks like to a model.

Training renders whole commits; evaluation renders the same commits as a prompt with the
target left out. Both go through :func:`render_prompt` and :func:`render_target`, so the model
is asked exactly the question it was trained on; the token ids of both come from the same
pieces (:func:`render_parts`, repotune.shards.prompt), never from encoding a prompt alone.

A commit is rendered in one of two task directions:

* ``message_to_change``: the message is the prompt, the diff is the target;
* ``change_to_message``: the diff is the prompt, the message is the target.

:func:`task_for` picks the direction from the commit sha, so the mix is seeded and a commit
keeps its direction whatever else is in the data.

Templates (``TEMPLATES``):

* ``plain``: text markers ``<|message|>`` and ``<|diff|>``, each right before what it
  announces (no newline between), the message as subject, blank line, body, and each file
  as a git-style header (``diff --git``, mode, rename and binary lines, ``---``/``+++``)
  followed by its unified-diff hunks. Readable by any tokenizer; a byte-level BPE trained
  here carries the markers as special tokens.
* ``starcoder``: StarCoder's commit tokens, ``<commit_before>``, ``<commit_msg>``,
  ``<commit_after>``, around the same git-style diff (commits.parquet carries diffs, not the
  before/after file contents StarCoder saw in pre-training).
* ``starcoder2``: StarCoder2's pull-request tokens: ``<pr>`` before the message,
  ``<pr_diff>`` before the change, ``<pr_file>`` before each path, ``<pr_diff_hunk>`` before
  each hunk.

A native template is used only when the tokenizer really carries its special tokens
(:func:`choose_template`); otherwise its markers would be split into meaningless pieces, and
``plain`` is used instead.
"""

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from repotune.shards.marked import Marked, join, marker, template_text, text

MESSAGE_TO_CHANGE = "message_to_change"
CHANGE_TO_MESSAGE = "change_to_message"
TASKS = (MESSAGE_TO_CHANGE, CHANGE_TO_MESSAGE)

Commit = Mapping[str, Any]
"""A row of the curated Parquet as a mapping: ``subject``, ``body``, ``files`` (the
``FILE_CHANGE`` structs of repotune.commit_table as mappings), ``sha``."""


@dataclass(frozen=True)
class Template:
    """How the parts of a commit are laid out, for both task directions.

    ``message_to_change`` renders ``m2c_open + message + m2c_sep + files``;
    ``change_to_message`` renders ``c2m_open + files + c2m_sep + message``. Each file is its
    header followed by its hunks, each hunk after ``hunk_prefix``.
    """

    name: str
    description: str
    markers: tuple[str, ...]
    m2c_open: str
    m2c_sep: str
    c2m_open: str
    c2m_sep: str
    file_header: Callable[[Commit], str]
    hunk_prefix: str = ""
    file_marker: str = ""
    """The marker each file header starts with (starcoder2's ``<pr_file>``), if any."""

    def marked(self, value: str) -> Marked:
        """One of this template's own strings, its markers as markers."""
        return template_text(value, self.markers)

    def header_parts(self, change: Commit) -> Marked:
        """:attr:`file_header` of ``change``, its opening marker a marker (the path is text)."""
        header = self.file_header(change)
        if self.file_marker:
            return join(marker(self.file_marker), text(header.removeprefix(self.file_marker)))
        return text(header)


def _git_file_header(change: Commit) -> str:
    """The header lines ``git diff`` prints before a file's hunks."""
    path = change["path"]
    old = change.get("old_path") or path
    kind = change["change_type"]
    old_mode, new_mode = change.get("old_mode"), change.get("new_mode")
    lines = [f"diff --git a/{old} b/{path}"]
    if kind == "A" and new_mode:
        lines.append(f"new file mode {new_mode}")
    elif kind == "D" and old_mode:
        lines.append(f"deleted file mode {old_mode}")
    elif old_mode and new_mode and old_mode != new_mode:
        lines += [f"old mode {old_mode}", f"new mode {new_mode}"]
    if kind in ("R", "C"):
        verb = "rename" if kind == "R" else "copy"
        if change.get("similarity") is not None:
            lines.append(f"similarity index {change['similarity']}%")
        lines += [f"{verb} from {old}", f"{verb} to {path}"]
    before = "/dev/null" if kind == "A" else f"a/{old}"
    after = "/dev/null" if kind == "D" else f"b/{path}"
    if change.get("is_binary"):
        lines.append(f"Binary files {before} and {after} differ")
    elif change.get("patch"):
        lines += [f"--- {before}", f"+++ {after}"]
    return "\n".join(lines) + "\n"


def _pr_file_header(change: Commit) -> str:
    """StarCoder2's ``<pr_file>path``, then the git lines that say what happened to it."""
    git_lines = _git_file_header(change).splitlines(keepends=True)[1:]
    kept = [line for line in git_lines if not line.startswith(("--- ", "+++ "))]
    return f"<pr_file>{change['path']}\n" + "".join(kept)


PLAIN = Template(
    name="plain",
    description=(
        "'<|message|>' then the subject, blank line, body; '<|diff|>' then per file a "
        "git-style header (diff --git, mode/rename/binary lines, ---/+++) and its unified-diff "
        "hunks. message_to_change puts the message first, change_to_message the diff first."
    ),
    markers=("<|message|>", "<|diff|>"),
    # A marker right before what it announces, no newline between: the token before a
    # message's first is then the message marker itself, which a small model learns at once;
    # behind a newline it read the newline, which in a diff starts a diff line (BENCHMARKS.md,
    # the plain template's markers).
    m2c_open="<|message|>",
    m2c_sep="<|diff|>",
    c2m_open="<|diff|>",
    c2m_sep="<|message|>",
    file_header=_git_file_header,
)

STARCODER = Template(
    name="starcoder",
    description=(
        "StarCoder commit tokens around a git-style unified diff: message_to_change is "
        "'<commit_before><commit_msg>message<commit_after>diff', change_to_message is "
        "'<commit_before>diff<commit_msg>message'."
    ),
    markers=("<commit_before>", "<commit_msg>", "<commit_after>"),
    m2c_open="<commit_before><commit_msg>",
    m2c_sep="<commit_after>",
    c2m_open="<commit_before>",
    c2m_sep="<commit_msg>",
    file_header=_git_file_header,
)

STARCODER2 = Template(
    name="starcoder2",
    description=(
        "StarCoder2 pull-request tokens: '<pr>message' and '<pr_diff>' then per file "
        "'<pr_file>path' plus git mode/rename/binary lines and '<pr_diff_hunk>' before each "
        "hunk. message_to_change is '<pr>message<pr_diff>files', change_to_message is "
        "'<pr_diff>files<pr>message'."
    ),
    markers=("<pr>", "<pr_diff>", "<pr_file>", "<pr_diff_hunk>"),
    m2c_open="<pr>",
    m2c_sep="<pr_diff>",
    c2m_open="<pr_diff>",
    c2m_sep="<pr>",
    file_header=_pr_file_header,
    hunk_prefix="<pr_diff_hunk>",
    file_marker="<pr_file>",
)

TEMPLATES: dict[str, Template] = {t.name: t for t in (PLAIN, STARCODER, STARCODER2)}


LAYOUT_EXAMPLE: Commit = {
    "sha": "0" * 40,
    "subject": "Rename a module",
    "body": "Why it moved.",
    "files": [
        {"path": "b.py", "old_path": "a.py", "change_type": "R", "similarity": 90,
         "old_mode": "100644", "new_mode": "100755", "is_binary": False,
         "patch": "@@ -1 +1 @@\n-x = 1\n+x = 2\n@@ -9 +9 @@\n-y\n+z\n"},
    ],
}  # fmt: skip
"""A commit with a rename, a mode change and two hunks: :func:`layout` renders it."""


def layout(template: Template) -> str:
    """A digest of how ``template`` lays a commit out, in both task directions: the run record
    keeps it, so a run rendered with another layout of a template of the same name (an older
    repotune's) is told to rerun rather than asked in a form its model never saw."""
    texts = [render(LAYOUT_EXAMPLE, task, template) for task in TASKS]
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]


def get_template(name: str) -> Template:
    """The template called ``name`` (one of ``TEMPLATES``)."""
    return TEMPLATES[name]


def choose_template(requested: str, special_tokens: Collection[str]) -> Template:
    """``requested`` if the tokenizer's special tokens include all its markers, else plain.

    ``special_tokens`` are the tokenizer's added/special token strings. ``plain`` needs no
    special tokens: its markers read as text when the tokenizer does not know them.
    """
    template = get_template(requested)
    if template is PLAIN or set(template.markers) <= set(special_tokens):
        return template
    return PLAIN


def task_for(sha: str, message_to_change: float, seed: int) -> str:
    """The task direction of commit ``sha``: ``message_to_change`` with that probability.

    A hash of seed and sha rather than a random stream, so a commit's direction does not
    depend on which other commits are in the split or in what order they come.
    """
    digest = hashlib.sha256(f"{seed}:{sha}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    return MESSAGE_TO_CHANGE if draw < message_to_change else CHANGE_TO_MESSAGE


def message_text(commit: Commit) -> str:
    """Subject, blank line, body (when there is one), ending in a newline."""
    body = commit.get("body") or ""
    return commit["subject"] + (f"\n\n{body}" if body else "") + "\n"


def _hunks(patch: str | None) -> list[str]:
    """A patch's hunks, each starting at its ``@@`` line and ending in a newline (found with
    ``str.find``: twice as fast as a regular expression, on every patch of the history)."""
    if not patch:
        return []
    starts = [0]
    at = patch.find("\n@@ ")
    while at >= 0:
        starts.append(at + 1)
        at = patch.find("\n@@ ", at + 1)
    hunks = [patch[start:end] for start, end in zip(starts, [*starts[1:], len(patch)], strict=True)]
    return [*hunks[:-1], hunks[-1] if hunks[-1].endswith("\n") else hunks[-1] + "\n"]


def file_pieces(change: Commit, template: Template) -> list[str]:
    """One file's rendering in pieces: header plus first hunk, then each further hunk.

    Long commits are split between these pieces, so a split falls on a file or hunk boundary.
    """
    return ["".join(part) for part in file_parts(change, template)]


def file_parts(change: Commit, template: Template) -> list[Marked]:
    """:func:`file_pieces` with their markers marked (the hunk prefix, the file marker)."""
    header = template.header_parts(change)
    prefix = marker(template.hunk_prefix) if template.hunk_prefix else ("",)
    hunks = [join(prefix, text(hunk)) for hunk in _hunks(change.get("patch"))]
    if not hunks:
        return [header]
    return [join(header, hunks[0]), *hunks[1:]]


def _files_text(commit: Commit, template: Template) -> str:
    return "".join(piece for change in commit["files"] for piece in file_pieces(change, template))


def render_pieces(commit: Commit, task: str, template: Template) -> list[str]:
    """The whole rendering of ``commit`` as pieces whose concatenation is the full text.

    The first piece of a ``message_to_change`` rendering is the prompt (message and
    markers); the last piece of a ``change_to_message`` rendering is the message after its
    marker. Every other piece is a file header with its first hunk, or a further hunk.
    """
    return [piece.text for piece in render_parts(commit, task, template)]


@dataclass(frozen=True)
class Piece:
    """A piece of a rendering (see :func:`render_pieces`) and the file it belongs to.

    ``marked``: its text, the template's markers marked (repotune.shards.marked: only these
    become marker ids; the same strings in the commit stay text). ``header``: the header of
    its file, marked (empty for the message and marker pieces); ``opens_file`` says the piece
    begins with it (a file's first piece). A document that continues a long commit from this
    piece repeats what it needs: see repotune.shards.prompt.
    """

    marked: Marked
    header: Marked = ()
    opens_file: bool = False

    @property
    def text(self) -> str:
        return "".join(self.marked)

    @property
    def file_header(self) -> str:
        return "".join(self.header)


def render_parts(commit: Commit, task: str, template: Template) -> list[Piece]:
    """:func:`render_pieces` with the file each piece belongs to and their markers marked."""
    files = [
        Piece(part, header, number == 0)
        for change in commit["files"]
        for header in (template.header_parts(change),)
        for number, part in enumerate(file_parts(change, template))
    ]
    if task == MESSAGE_TO_CHANGE:
        return [message_part(commit, task, template), *files]
    if task == CHANGE_TO_MESSAGE:
        return [
            Piece(template.marked(template.c2m_open)),
            *files,
            message_part(commit, task, template),
        ]
    raise ValueError(f"task '{task}' is not one of {TASKS}")


def message_part(commit: Commit, task: str, template: Template) -> Piece:
    """The piece that holds the message: ``message_to_change``: the prompt (opening marker,
    message, diff marker); ``change_to_message``: the message marker and the message."""
    message = text(message_text(commit))
    if task == MESSAGE_TO_CHANGE:
        opening, separator = template.marked(template.m2c_open), template.marked(template.m2c_sep)
        return Piece(join(opening, message, separator))
    if task == CHANGE_TO_MESSAGE:
        return Piece(join(template.marked(template.c2m_sep), message))
    raise ValueError(f"task '{task}' is not one of {TASKS}")


def subject_only(commit: Commit) -> Commit:
    """``commit`` without its body: a change->message document whose message would take more
    than half its block keeps the subject alone (repotune.shards.prompt)."""
    return {**commit, "body": ""}


def task_header(commit: Commit, task: str, template: Template) -> str:
    """What every continuation document of a long commit starts with: the task's opening.

    ``message_to_change``: the opening marker, the subject line and the diff marker (the
    body is left out: it may be long, and the first document has it); ``change_to_message``:
    the opening marker.
    """
    return "".join(task_opening(commit, task, template))


def task_opening(commit: Commit, task: str, template: Template) -> Marked:
    """:func:`task_header` with its markers marked."""
    if task == MESSAGE_TO_CHANGE:
        subject = text(commit["subject"] + "\n")
        return join(template.marked(template.m2c_open), subject, template.marked(template.m2c_sep))
    if task == CHANGE_TO_MESSAGE:
        return template.marked(template.c2m_open)
    raise ValueError(f"task '{task}' is not one of {TASKS}")


def render_prompt(commit: Commit, task: str, template: Template) -> str:
    """What the model is given: the rendering up to and including the target's marker."""
    if task == MESSAGE_TO_CHANGE:
        return template.m2c_open + message_text(commit) + template.m2c_sep
    if task == CHANGE_TO_MESSAGE:
        return template.c2m_open + _files_text(commit, template) + template.c2m_sep
    raise ValueError(f"task '{task}' is not one of {TASKS}")


def render_target(commit: Commit, task: str, template: Template) -> str:
    """What the model should produce after :func:`render_prompt` (before the EOS token)."""
    if task == MESSAGE_TO_CHANGE:
        return _files_text(commit, template)
    if task == CHANGE_TO_MESSAGE:
        return message_text(commit)
    raise ValueError(f"task '{task}' is not one of {TASKS}")


def render(commit: Commit, task: str, template: Template) -> str:
    """The full training text of ``commit``: prompt followed by target."""
    return render_prompt(commit, task, template) + render_target(commit, task, template)
