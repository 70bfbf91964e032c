"""Which commits and files are worth learning from.

A history holds much that teaches a model nothing or the wrong thing: bot commits, merges
that repeat their branch, reverts, "wip" messages, lockfiles and minified bundles, binary
blobs, mass rewrites and the same patch cherry-picked twice. Each filter here is one
predicate with its own switch in ``curate.filters``; curation applies them in the order of
:data:`COMMIT_FILTERS` and counts each dropped commit under the first filter that drops it.
"""

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from repotune.errors import InputError

# The order filters run in, and the names curation.json counts under. `generated_files` drops
# files, not commits; `no_files` drops the commits that have no file left after it (or had
# none to begin with, like `git commit --allow-empty`), which is not a switch: a commit
# without a diff has nothing to learn from.
COMMIT_FILTERS: tuple[str, ...] = (
    "bots",
    "merges",
    "reverts",
    "trivial_messages",
    "generated_files",
    "no_files",
    "binary_only",
    "oversized",
    "duplicates",
)

_MERGE_SUBJECT = re.compile(
    r"Merge (?:(?:remote-tracking )?branch|branches|pull request|tag|commit) ", re.IGNORECASE
)
_REVERT_SUBJECT = re.compile(r"Revert\b", re.IGNORECASE)
_REVERT_BODY = re.compile(r"This reverts commit [0-9a-f]{7,64}", re.IGNORECASE)
_WORD = re.compile(r"\w+")
_HUNK_HEADER = re.compile(r"^@@[^\n]*", re.MULTILINE)


@dataclass(frozen=True)
class FilterSettings:
    """The ``curate.filters`` config section (defaults live in config/schema.yaml)."""

    bots: bool
    bot_patterns: tuple[str, ...]
    merges: bool
    reverts: bool
    trivial_messages: bool
    trivial_subjects: tuple[str, ...]
    min_message_words: int
    generated_files: bool
    generated_globs: tuple[str, ...]
    binary_only: bool
    oversized: bool
    max_patch_bytes: int
    duplicates: bool

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> "FilterSettings":
        values = dict(section)
        for key in ("bot_patterns", "trivial_subjects", "generated_globs"):
            values[key] = tuple(values[key])
        return cls(**values)


def _any_of(patterns: tuple[str, ...], key: str) -> re.Pattern[str]:
    """One case-insensitive regex matching any of ``patterns``; a bad one names its key."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise InputError(
                f"config['curate']['filters']['{key}']",
                f"{pattern!r} is not a valid regular expression ({error})",
                "fix or remove it",
            ) from None
    if not patterns:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns), re.IGNORECASE)


def glob_to_regex(glob: str) -> str:
    """Translate one path glob to a regex that ``search``es a repository-relative path.

    Three shapes, like .gitignore: ``name/`` matches a directory of that name at any depth
    (``vendor/`` drops ``vendor/x.go`` and ``lib/vendor/x.go``); a glob without ``/`` matches
    the file name at any depth (``*.min.js``); any other glob matches the whole path. ``*``
    stays within one path component, ``**`` crosses them, ``?`` is one character.
    """

    def translate(text: str) -> str:
        parts = re.split(r"(\*\*|\*|\?)", text)
        wildcards = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
        return "".join(wildcards.get(part, re.escape(part)) for part in parts)

    if glob.endswith("/"):
        return rf"(?:^|/){translate(glob.rstrip('/'))}/"
    if "/" in glob:
        return rf"^{translate(glob.lstrip('/'))}\Z"
    return rf"(?:^|/){translate(glob)}\Z"


class SeenKeys:
    """A set of 64-bit keys in about 8 bytes a key, for the duplicate filter.

    A Python set of digests costs ~90 bytes a commit, which on a million-commit history is
    the one part of curation that grows with its length. New keys go to a small set; when it
    fills they are merged into one sorted numpy array that lookups binary-search.
    """

    def __init__(self, recent_limit: int = 65536) -> None:
        self._sorted = np.zeros(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._limit = recent_limit

    def __contains__(self, key: int) -> bool:
        if key in self._recent:
            return True
        at = int(np.searchsorted(self._sorted, np.uint64(key)))
        return at < len(self._sorted) and int(self._sorted[at]) == key

    def add(self, key: int) -> None:
        if key in self:
            return
        self._recent.add(key)
        if len(self._recent) >= self._limit:
            recent = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            self._sorted = np.union1d(self._sorted, recent)
            self._recent.clear()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)


class CommitFilter:
    """The compiled filters of one curation run."""

    def __init__(self, settings: FilterSettings) -> None:
        self.settings = settings
        self._bots = _any_of(settings.bot_patterns, "bot_patterns")
        self._trivial = _any_of(settings.trivial_subjects, "trivial_subjects")
        globs = "|".join(glob_to_regex(glob) for glob in settings.generated_globs)
        self._generated = re.compile(globs or r"(?!)")
        self._seen_patches = SeenKeys()

    def message_verdict(self, commit: dict[str, Any]) -> str | None:
        """The first message-level filter that drops ``commit``, or None to keep it."""
        settings = self.settings
        if settings.bots and self._bots.search(commit["author_name"]):
            return "bots"
        if settings.merges and self.is_merge(commit):
            return "merges"
        if settings.reverts and self.is_revert(commit):
            return "reverts"
        if settings.trivial_messages and self.is_trivial(commit["subject"], commit["body"]):
            return "trivial_messages"
        return None

    @staticmethod
    def is_merge(commit: dict[str, Any]) -> bool:
        """A merge by its parents, or by git's default merge subject (squashed or rebased)."""
        return (
            commit["is_merge"]
            or len(commit["parents"]) > 1
            or _MERGE_SUBJECT.match(commit["subject"]) is not None
        )

    @staticmethod
    def is_revert(commit: dict[str, Any]) -> bool:
        """``git revert``'s subject (``Revert "..."``) or its ``This reverts commit`` line."""
        return (
            _REVERT_SUBJECT.match(commit["subject"]) is not None
            or _REVERT_BODY.search(commit["body"]) is not None
        )

    def is_trivial(self, subject: str, body: str) -> bool:
        """Empty, a known content-free subject, or fewer than ``min_message_words`` words.

        The subject is compared lower-cased, trimmed and without trailing ``.``/``!``, so
        "WIP." and "wip" are the same. A matching subject is trivial whatever the body says
        ("wip" with notes is still work in progress); the word count covers subject and body
        together, so a terse subject ("Fix") with a real explanation below it is kept.
        """
        normalized = " ".join(subject.lower().split()).rstrip(".!")
        if self._trivial.fullmatch(normalized):
            return True
        return len(_WORD.findall(subject)) + len(_WORD.findall(body)) < max(
            1, self.settings.min_message_words
        )

    def split_files(self, files: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """``(kept files, number dropped)``: generated, vendored and lock files go."""
        if not self.settings.generated_files:
            return files, 0
        kept = [change for change in files if not self.is_generated(change["path"])]
        return kept, len(files) - len(kept)

    def is_generated(self, path: str) -> bool:
        """Whether ``path`` matches ``generated_globs`` (lock, minified, vendored, built)."""
        return self._generated.search(path) is not None

    def content_verdict(self, files: list[dict[str, Any]]) -> str | None:
        """The first filter on the kept files that drops the commit, or None to keep it."""
        if not files:
            return "no_files"
        if self.settings.binary_only and all(change["is_binary"] for change in files):
            return "binary_only"
        if self.settings.oversized and (
            sum(change["patch_bytes"] for change in files) > self.settings.max_patch_bytes
        ):
            return "oversized"
        return None

    def is_duplicate(self, files: list[dict[str, Any]]) -> bool:
        """True when an earlier kept commit made the same change; remembers this one.

        Same change means what ``git patch-id`` means: the same paths with the same hunks,
        ignoring the line numbers in hunk headers, so a cherry-pick onto a branch where the
        code has moved still counts. A commit whose kept files have no patch text (binary,
        mode-only, pure renames) is never called a duplicate: there is nothing to compare.
        """
        if not self.settings.duplicates or not any(change["patch"] for change in files):
            return False
        digest = hashlib.blake2b(digest_size=8)  # 64 bits: a collision in 10^6 commits ~ 3e-8
        for change in files:
            for part in (
                change["path"],
                change["old_path"] or "",
                change["change_type"],
                _HUNK_HEADER.sub("@@", change["patch"] or ""),
            ):
                digest.update(part.encode("utf-8", "surrogatepass"))
                digest.update(b"\0")
        key = int.from_bytes(digest.digest(), "little")
        if key in self._seen_patches:
            return True
        self._seen_patches.add(key)
        return False
