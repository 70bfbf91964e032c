"""The pretraining corpus: local source files, listed from globs, deduplicated, hashed.

Every machine that runs repotune holds real source code: the interpreter's standard library and
the packages installed beside repotune. ``pretrain.corpus.include`` lists glob patterns
(``**`` crosses directories) in which ``{stdlib}`` and ``{site_packages}`` stand for this
interpreter's paths; ``exclude`` patterns drop files (the standard library's tests by default).

A file is left out, and counted, when it is larger than ``max_file_bytes``, empty, not UTF-8
text, a copy of a file already taken (same bytes: the git blob id), or an object of the data
repository (any commit's version of any file of it, however it got into site-packages): the
base must not have seen the history a fine-tuned model is evaluated on.

Each file gets a *name*: the glob's label (``stdlib``, ``site-packages``, or the last
directory before the first wildcard) and its path below that directory (below the placeholder's
directory for a ``{stdlib}``/``{site_packages}`` glob, so ``{stdlib}/json/*.py`` names
``stdlib/json/__init__.py``). Two files with one name are refused, not one dropped. Names,
not absolute paths, go into the cache key and the documents, so the same files give the same
key and the same model wherever the interpreter is installed. Files are ordered by name.

Reading 200+ MB on every plan would be slow, so each file's blob id is cached by (path, size,
mtime), as git's index does: a plan with nothing changed only stats the files.
"""

import hashlib
import json
import os
import re
import sysconfig
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repotune.atomic import write_text
from repotune.errors import InputError
from repotune.extract.repository import git_output, open_repository

PLACES = ("stdlib", "site_packages")
LABELS = {"stdlib": "stdlib", "site_packages": "site-packages"}
WILDCARDS = re.compile(r"[*?\[]")
SKIP_REASONS = ("too_large", "empty", "not_text", "duplicate", "data_repository")
# Where the workflow remembers the files' blob ids (relative to the directory it runs in).
BLOB_CACHE = ".snakemake/repotune/corpus-blobs.json"


def interpreter_places() -> dict[str, str]:
    """The directories the placeholders stand for in this interpreter. The workflow takes
    them where it plans (the Snakemake process), so a job in another environment
    (``--use-conda``) reads the same files."""
    paths = sysconfig.get_paths()
    return {"stdlib": paths["stdlib"], "site_packages": paths["purelib"]}


@dataclass(frozen=True)
class Pattern:
    """One glob with its placeholder expanded: the label of its files, the directory before
    its first wildcard (where the walk starts), the directory its files are named from (the
    placeholder's, else ``root``) and the regular expression of the whole."""

    text: str
    label: str
    root: Path
    regex: re.Pattern[str]
    base: Path

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def _translate(pattern: str) -> re.Pattern[str]:
    """A glob as a regular expression: ``**/`` any directories (none too), ``*`` and ``?``
    within one path component, ``[...]`` a character class."""
    out, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        elif pattern[index] == "[" and "]" in pattern[index + 1 :]:
            end = pattern.index("]", index + 1)
            body = pattern[index + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            index = end + 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out))


def expand(text: str, places: Mapping[str, str]) -> Pattern:
    """``text`` with a leading ``{stdlib}``/``{site_packages}`` replaced by its path."""
    label = place = None
    expanded = text
    found = re.match(r"\{([^}]*)\}", text)
    if found:
        if found.group(1) not in PLACES:
            raise InputError(
                f"config pretrain.corpus pattern '{text}'",
                f"'{{{found.group(1)}}}' is not a known placeholder",
                f"use {', '.join('{' + p + '}' for p in PLACES)} or a path",
            )
        label, place = LABELS[found.group(1)], places[found.group(1)]
        expanded = place + text[found.end() :]
    if "{" in expanded:
        raise InputError(
            f"config pretrain.corpus pattern '{text}'",
            "has a placeholder that does not start it",
            "put {stdlib} or {site_packages} first",
        )
    absolute = os.path.abspath(expanded)
    parts = absolute.split("/")
    fixed = next((i for i, part in enumerate(parts) if WILDCARDS.search(part)), len(parts) - 1)
    root = Path("/".join(parts[:fixed]) or "/")
    base = Path(os.path.abspath(place)) if place is not None else root
    return Pattern(text, label or root.name, root, _translate(absolute), base)


@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus: its name (label/relative path), where it is, size, blob id."""

    name: str
    path: str
    bytes: int
    sha: str

    @property
    def document_path(self) -> str:
        """The path its documents show the model: the name without its label."""
        return self.name.split("/", 1)[1]


@dataclass
class Corpus:
    """The files taken, in name order, and how many of each reason left out."""

    files: list[CorpusFile]
    skipped: Counter = field(default_factory=Counter)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.files)

    def listing(self) -> list[list[Any]]:
        """``[name, bytes, sha]`` of every file: what the cache key hashes."""
        return [[item.name, item.bytes, item.sha] for item in self.files]

    def summary(self) -> dict[str, Any]:
        return {
            "files": len(self.files),
            "bytes": self.bytes,
            "skipped": {reason: self.skipped[reason] for reason in SKIP_REASONS},
        }


def candidates(
    include: Sequence[str], exclude: Sequence[str], places: Mapping[str, str]
) -> Iterator[tuple[str, str]]:
    """(name, path) of every file an include pattern matches and no exclude pattern does."""
    excluded = [expand(text, places) for text in exclude]
    for pattern in (expand(text, places) for text in include):
        if not pattern.root.is_dir():
            if pattern.root.is_file() and pattern.matches(str(pattern.root)):
                yield _name(pattern, str(pattern.root)), str(pattern.root)
            continue
        root = str(pattern.root)
        for directory, folders, files in os.walk(root):
            folders.sort()
            for name in sorted(files):
                path = f"{directory}/{name}"
                if pattern.matches(path) and not any(e.matches(path) for e in excluded):
                    yield _name(pattern, path), path


def _name(pattern: Pattern, path: str) -> str:
    """A file's name: its pattern's label and its path below the pattern's ``base`` (a
    pattern that names one file outside the placeholders: the label and the file's name)."""
    if path == str(pattern.base):
        return f"{pattern.label}/{pattern.base.name}"
    return f"{pattern.label}/{os.path.relpath(path, pattern.base)}"


def named(found: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``(name, path)`` pairs as one path per name, in name order. Two patterns may match the
    same file (kept once); two files with the same name (two directories outside the
    placeholders with the same last name) would leave one out unseen: refused instead."""
    paths: dict[str, str] = {}
    for name, path in found:
        if paths.setdefault(name, path) != path:
            raise InputError(
                "config pretrain.corpus.include",
                f"names two files {name}: {paths[name]} and {path}",
                "give them globs under different directory names, or leave one out",
            )
    return dict(sorted(paths.items()))


def blob_id(data: bytes) -> str:
    """git's object id of a blob with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def is_text(data: bytes) -> bool:
    """UTF-8 without NUL bytes: what a file document can hold."""
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class BlobCache:
    """Blob id and text check of files, remembered by (path, size, mtime) in a JSON file."""

    def __init__(self, cache_file: str | Path | None) -> None:
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._entries: dict[str, list[Any]] = {}
        self._changed = False
        if self.cache_file is not None and self.cache_file.is_file():
            try:
                self._entries = json.loads(self.cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._entries = {}

    def look(self, path: str, stat: os.stat_result) -> tuple[str, bool]:
        """The file's blob id and whether it is text."""
        known = self._entries.get(path)
        if known is not None and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2], known[3]
        data = Path(path).read_bytes()
        sha, text = blob_id(data), is_text(data)
        self._entries[path] = [stat.st_size, stat.st_mtime_ns, sha, text]
        self._changed = True
        return sha, text

    def save(self) -> None:
        """Write the cache if it learnt something (best effort: it is only a cache)."""
        if self.cache_file is None or not self._changed:
            return
        try:
            write_text(self.cache_file, json.dumps(self._entries))
            self._changed = False
        except OSError:
            pass


def repository_blobs(repo: str | Path) -> frozenset[str]:
    """Every blob id in the data repository's object store (all commits, all branches)."""
    open_repository(repo)
    listing = git_output(
        repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)"
    )
    return frozenset(
        line.split(" ", 1)[0] for line in listing.splitlines() if line.endswith(" blob")
    )


def list_corpus(
    settings: Mapping[str, Any],
    repo: str | Path | None,
    places: Mapping[str, str],
    cache_file: str | Path | None = None,
) -> Corpus:
    """The corpus ``settings`` (``pretrain.corpus``) describe, with ``places`` for the
    placeholders, without the files of ``repo`` (None: no data repository to leave out)."""
    leave_out = repository_blobs(repo) if repo is not None else frozenset()
    cache = BlobCache(cache_file)
    seen: set[str] = set()
    files: list[CorpusFile] = []
    skipped: Counter = Counter()
    found = named(candidates(settings["include"], settings["exclude"], places))
    for name, path in found.items():
        try:
            stat = os.stat(path)
        except OSError:
            continue  # a dangling link
        if stat.st_size > settings["max_file_bytes"]:
            skipped["too_large"] += 1
            continue
        if stat.st_size == 0:
            skipped["empty"] += 1
            continue
        sha, text = cache.look(path, stat)
        reason = (
            "not_text" if not text
            else "data_repository" if sha in leave_out
            else "duplicate" if sha in seen
            else None
        )  # fmt: skip
        if reason is not None:
            skipped[reason] += 1
            continue
        seen.add(sha)
        files.append(CorpusFile(name, path, stat.st_size, sha))
    cache.save()
    if not files:
        raise InputError(
            "config pretrain.corpus",
            f"matches no usable file (left out: {dict(skipped) or 'none matched'})",
            "check the include and exclude patterns",
        )
    return Corpus(files, skipped)


def corpus_key(corpus: Corpus, settings: Mapping[str, Any]) -> str:
    """The cache key of a base: sha256 over the file list (names, sizes, blob ids) and the
    settings that shape the model."""
    payload = json.dumps({"files": corpus.listing(), "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def rank(seed: int, sha: str) -> str:
    """A file's place in the seeded order (by content, so the same wherever it lies)."""
    return hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest()


def split_corpus(
    files: Iterable[CorpusFile], seed: int, validation_share: float, max_bytes: int
) -> dict[str, list[CorpusFile]]:
    """Validation, train and unused files, each in the seeded order.

    Validation takes files until it holds ``validation_share`` of the bytes used (at least one
    file, and never the last one); train takes the next files until ``max_bytes`` are used
    (0: all of them). The rest are unused, for a corpus larger than the budget.
    """
    ordered = sorted(files, key=lambda item: rank(seed, item.sha))
    total = sum(item.bytes for item in ordered)
    used = min(total, max_bytes) if max_bytes > 0 else total
    validation: list[CorpusFile] = []
    taken = 0
    while len(validation) < len(ordered) - 1 and (
        not validation or taken < validation_share * used
    ):
        validation.append(ordered[len(validation)])
        taken += validation[-1].bytes
    train: list[CorpusFile] = []
    rest = ordered[len(validation) :]
    for item in rest:
        if max_bytes > 0 and train and taken + item.bytes > max_bytes:
            break
        train.append(item)
        taken += item.bytes
    return {"train": train, "validation": validation, "unused": rest[len(train) :]}


def read_text(item: CorpusFile) -> str:
    """A corpus file's text (checked to be UTF-8 when listed)."""
    return Path(item.path).read_text(encoding="utf-8")
