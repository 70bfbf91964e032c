"""Recheck a manifest: are the files on disk still the ones the run wrote?

``python -m repotune.manifest.verify results/<model>/manifest.json [--root DIR]`` rehashes every
artifact the manifest lists, prints each one that is missing, changed (size and sha256 before
and after) or new in an artifact directory, and exits with status 1 when anything differs
(0 when all match, 2 when the manifest itself cannot be read). Paths in the manifest are
relative to the run directory, by default the current one.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repotune.errors import InputError
from repotune.manifest.stage import artifact_files, sha256_file


@dataclass(frozen=True)
class Change:
    """One artifact that no longer matches: ``kind`` is missing, changed or added."""

    path: str
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind:8} {self.path}" + (f"  ({self.detail})" if self.detail else "")


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest, failing in one line when it is absent or not a manifest."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest '{path}'", "does not exist", "run the workflow first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"manifest '{path}'", f"is not JSON ({error})", "regenerate it") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise InputError(f"manifest '{path}'", "has no artifacts list", "regenerate it")
    return manifest


def verify(manifest: dict[str, Any], root: str | Path = ".") -> list[Change]:
    """Every difference between the manifest's artifacts and the files under ``root``."""
    root = Path(root)
    changes: list[Change] = []
    listed = set()
    for entry in manifest["artifacts"]:
        relative = entry["path"]
        listed.add(relative)
        path = root / relative
        if not path.is_file():
            changes.append(Change(relative, "missing"))
            continue
        size = path.stat().st_size
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            detail = f"sha256 {entry['sha256'][:12]} -> {digest[:12]}"
            if size != entry["bytes"]:
                detail += f", {entry['bytes']} -> {size} bytes"
            changes.append(Change(relative, "changed", detail))
    for relative in artifact_files(
        [r for r in manifest.get("artifact_roots", []) if (root / r).is_dir()], root
    ):
        if relative not in listed:
            changes.append(Change(relative, "added", "not in the manifest"))
    return changes


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m repotune.manifest.verify",
        description="Recheck the hashes in a run's manifest.",
    )
    parser.add_argument("manifest", help="results/<model>/manifest.json")
    parser.add_argument(
        "--root", default=".", help="the run directory the manifest's paths are relative to"
    )
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest(args.manifest)
    except InputError as error:
        print(f"repotune error: {error}", file=sys.stderr)
        return 2
    changes = verify(manifest, args.root)
    total = len(manifest["artifacts"])
    for change in changes:
        print(change)
    if changes:
        print(f"{len(changes)} difference(s) from {args.manifest} ({total} artifacts listed)")
        return 1
    print(f"all {total} artifacts match {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
