"""The change to describe: the staged diff (or one on stdin) as the file records training saw.

The staged change is asked of git with the extract stage's options and parsed by the extract
stage's own parser (repotune.extract.gitlog), so its records (docs/data-contracts.md: path,
old path, change type, modes, similarity, binary, patch) are what a commit of it would give.
A diff on stdin is plain ``git diff`` text, read by :func:`parse_diff` into the same records
(modes of pure renames aside, which the rendering does not show). Either way
:func:`repotune.shards.render.render_prompt` lays it out exactly as it laid out training
commits. The curate stage's file filters then drop what curation dropped (lock files,
generated and vendored files), with the run's own settings.
"""

import functools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from repotune.errors import InputError
from repotune.extract.gitlog import DIFF_FORMAT, parse_commit

# What the extract stage asks git for (repotune.extract.stage.git_log_command), for the index.
GIT_DIFF = (
    "-c",
    "core.quotePath=false",
    "-c",
    "diff.noprefix=false",
    "diff",
    "--cached",
    *DIFF_FORMAT,
    "-M",
    "-C",
)
# An empty commit header in the extract parser's layout: the staged diff is parsed as a
# commit's raw records and patch, by the very code that parsed the training commits.
_EMPTY_HEADER = b"\x00\x00\x00\x00" + b"0 +0000\x00\x00" + b"0 +0000\x00\x00\x00"
_SECTION = re.compile(r"(?m)^diff --git ")


@functools.cache
def _schema_defaults() -> dict[str, Any]:
    """The config's defaults (read and validated once: the hook has little time)."""
    from repotune.config import resolve_config

    return resolve_config({})


def git_toplevel(repo: str | Path) -> Path:
    """The work tree's top directory; a one-line error when ``repo`` is not in a git work tree."""
    result = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise InputError(
            f"directory '{repo}'",
            "is not inside a git work tree",
            "run repotune from your repository or pass --repo PATH",
        )
    return Path(result.stdout.strip())


def staged_files(repo: str | Path) -> list[dict[str, Any]]:
    """The staged change's file records, parsed exactly as the extract stage parses a commit
    (the index git is committing: GIT_INDEX_FILE is honoured), each patch cut at the extract
    stage's default ``max_patch_bytes``."""
    max_patch_bytes = _schema_defaults()["extract"]["max_patch_bytes"]
    git_toplevel(repo)
    result = subprocess.run(
        ["git", "-C", str(repo), *GIT_DIFF],
        capture_output=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputError(
            f"repository '{repo}'",
            f"git diff --cached failed ({message[-1] if message else result.returncode})",
            "check that git works in this repository",
        )
    commit = parse_commit(_EMPTY_HEADER + result.stdout, max_patch_bytes)
    return [change._asdict() for change in commit.files]


def _unquote(path: str) -> str:
    """A path as git prints it, without the quotes git adds around unusual names."""
    if len(path) >= 2 and path[0] == path[-1] == '"':
        return path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
    return path


def _strip_prefix(path: str, prefix: str) -> str:
    path = _unquote(path)
    return path[len(prefix) :] if path.startswith(prefix) else path


def _paths_from_header(line: str) -> tuple[str, str]:
    """``a/OLD b/NEW`` of a ``diff --git`` line (split in the middle when both are equal)."""
    rest = line[len("diff --git ") :]
    half = (len(rest) - 1) // 2
    if rest[half : half + 3] == " b/" and rest[2:half] == rest[half + 3 :]:
        return rest[2:half], rest[half + 3 :]
    old, _, new = rest.partition(" b/")
    return _strip_prefix(old, "a/"), new


def parse_file(section: str) -> dict[str, Any]:
    """One ``diff --git`` section as an extract-stage file record."""
    hunks_at = section.find("\n@@")
    head = section if hunks_at == -1 else section[:hunks_at]
    patch = "" if hunks_at == -1 else section[hunks_at + 1 :]
    lines = head.splitlines()
    old, new = _paths_from_header(lines[0])
    record: dict[str, Any] = {
        "path": new,
        "old_path": None,
        "change_type": "M",
        "old_mode": None,
        "new_mode": None,
        "similarity": None,
        "is_binary": False,
        "is_submodule": False,
        "patch": patch,
    }
    for line in lines[1:]:
        word, _, value = line.partition(" ")
        if line.startswith("new file mode "):
            record["change_type"], record["new_mode"] = "A", line.rsplit(" ", 1)[1]
        elif line.startswith("deleted file mode "):
            record["change_type"], record["old_mode"] = "D", line.rsplit(" ", 1)[1]
        elif line.startswith("old mode "):
            record["old_mode"] = line.rsplit(" ", 1)[1]
        elif line.startswith("new mode "):
            record["new_mode"] = line.rsplit(" ", 1)[1]
        elif line.startswith("similarity index "):
            record["similarity"] = int(line.rsplit(" ", 1)[1].rstrip("%"))
        elif line.startswith(("rename from ", "copy from ")):
            record["change_type"] = "R" if word == "rename" else "C"
            record["old_path"] = _unquote(line.split(" ", 2)[2])
        elif line.startswith(("rename to ", "copy to ")):
            record["path"] = _unquote(line.split(" ", 2)[2])
        elif line.startswith("index ") and len(value.split()) == 2:
            mode = value.split()[1]
            record["old_mode"] = record["old_mode"] or mode
            record["new_mode"] = record["new_mode"] or mode
        elif line.startswith(("Binary files ", "GIT binary patch")):
            record["is_binary"] = True
        elif line.startswith("+++ ") and not line.endswith("/dev/null"):
            record["path"] = _strip_prefix(line[4:], "b/")
    if record["change_type"] in ("R", "C") and record["old_path"] is None:
        record["old_path"] = old
    if record["is_binary"]:
        record["patch"] = None  # as the extract stage stores binary files
    modes = (record["old_mode"], record["new_mode"])
    record["is_submodule"] = "160000" in modes
    record["patch_bytes"] = len(patch.encode("utf-8")) if patch else 0
    return record


def parse_diff(text: str) -> list[dict[str, Any]]:
    """Every file of a ``git diff`` text; text before the first ``diff --git`` is ignored."""
    starts = [match.start() for match in _SECTION.finditer(text)]
    ends = [*starts[1:], len(text)] if starts else []  # no section: no files (an empty diff)
    return [parse_file(text[start:end]) for start, end in zip(starts, ends, strict=True)]


def filtered_files(
    files: list[dict[str, Any]], curate_settings: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """``(kept files, dropped paths)`` under the run's curate file filters (the schema's
    defaults when the run has no curation.json)."""
    from repotune.curate.filters import CommitFilter, FilterSettings

    section = (curate_settings or _schema_defaults()["curate"])["filters"]
    kept, _ = CommitFilter(FilterSettings.from_config(section)).split_files(files)
    kept_ids = {id(change) for change in kept}
    return kept, [change["path"] for change in files if id(change) not in kept_ids]
