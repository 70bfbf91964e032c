"""Print the runtime lock: requirements.txt and everything it needs, as installed in this venv.

Usage: python ci/lock.py [REQUIREMENTS]   (default: requirements.txt; `make lock` writes the
output to requirements.lock)

`pip freeze` pins whatever the venv holds, so after `make mutation` it would also lock mutmut
and its dependencies (requirements-dev.txt), which the workflow and `make test` never use. This
walks the installed metadata from the requirements instead (their dependencies, with the
environment markers and extras that apply) and prints what pip freeze would print for exactly
those distributions: `Name==version`, sorted by lower-case name. torch's `+cpu` label is
dropped: the lock names the release, and the machine picks the build (requirements.txt).
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# pip freeze leaves these out (they are the installer's own), and so does the lock.
INSTALLER = {"pip", "setuptools", "wheel", "distribute"}


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements of a pip requirements file (one per line, `#` comments)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def installed_closure(roots: list[Requirement]) -> dict[str, metadata.Distribution]:
    """Every installed distribution the roots need, by canonical name.

    A requirement's extras add the dependencies marked `extra == "..."`; each (name, extra)
    is walked once. Raises SystemExit naming a needed distribution that is not installed.
    """
    found: dict[str, metadata.Distribution] = {}
    walked: set[tuple[str, str]] = set()
    pending = list(roots)
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        try:
            found[name] = found.get(name) or metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"lock: {requirement.name} is required but not installed in {sys.prefix}: "
                "run `make setup` first"
            ) from None
        for extra in {"", *requirement.extras} - {e for n, e in walked if n == name}:
            walked.add((name, extra))
            for text in found[name].requires or []:
                dependency = Requirement(text)
                if dependency.marker is None or dependency.marker.evaluate({"extra": extra}):
                    pending.append(dependency)
    return found


def lock_lines(requirements: Path) -> list[str]:
    """`Name==version` for each distribution of the closure, in pip freeze's order."""
    found = installed_closure(read_requirements(requirements))
    pins = [
        (
            dist.metadata["Name"],
            dist.version.removesuffix("+cpu") if name == "torch" else dist.version,
        )
        for name, dist in found.items()
        if name not in INSTALLER
    ]
    return [f"{name}=={version}" for name, version in sorted(pins, key=lambda p: p[0].lower())]


def main(argv: list[str] | None = None) -> int:
    """Print the lock of the requirements file named on the command line."""
    args = sys.argv[1:] if argv is None else argv
    requirements = Path(args[0] if args else "requirements.txt")
    print("\n".join(lock_lines(requirements)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
