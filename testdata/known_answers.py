"""A git history whose answers are known: what a model trained on it should be able to say.

Every file is a small class, ``<package>/<module>.py``, holding a few *fields*: one
``self._<field> = 0`` line in ``__init__`` and, in the same order, one getter per field::

    class Alpha:
        def __init__(self):
            self._apple = 0
            self._cherry = 0

        def get_apple(self):
            return self._apple

        def get_cherry(self):
            return self._cherry

Each commit makes one change of three kinds, and its message is a fixed function of that
change, so it can only be right by reading the diff (the field and module are drawn, never
implied by anything before the diff):

* ``<module>: add get_<field>``: the field's ``__init__`` line and getter, at a drawn place;
* ``<module>: remove get_<field>``: both taken out;
* ``<module>: rename get_<old> to get_<new>``: both renamed.

The message spells the module and the getter as the diff's own tokens do (``kappa`` as in the
path ``util/kappa.py``, ``get_fig`` as in ``def get_fig``), so a model can copy them. A diff
of one of these files is about as long as a 128-token block: at that block length most
commits are longer than a block, as a real repository's are at 1,024.

Fill-in-the-middle questions mask a run of added lines of a test commit (repotune's FIM
evaluation); every such run here is predictable from the rest of the file: a masked
``__init__`` line is the field whose getter follows the getter of the field before it
(``self._cherry = 0`` after ``self._apple = 0``, when ``get_cherry`` follows ``get_apple``),
and a masked getter the field that follows in ``__init__``: an induction a two-layer
transformer learns (Olsson et al. 2022). Words are a small closed vocabulary of common
English words, each a single token of a byte-level BPE trained on this history, so a tiny
model can copy them from the diff into the message.

Built with ``git fast-import`` (one process, no per-commit git calls) from a seed: the same
arguments give the same repository, shas included. Commits are an hour apart, so the
workflow's time split gives train, validation and test in history order.
"""

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

PACKAGES = (
    "core", "util", "web", "data", "tools", "api", "cli", "db", "net", "io", "ui", "jobs",
)  # fmt: skip
MODULES = ("alpha", "beta", "gamma", "delta", "kappa", "sigma", "omega", "theta")
FIELDS = (
    "apple", "berry", "cherry", "grape", "lemon", "mango", "melon", "olive",
    "peach", "pear", "plum", "lime", "kiwi", "fig", "bean", "corn",
)  # fmt: skip
FIRST_FIELDS = 2
MIN_FIELDS = 1
MAX_FIELDS = 3
START = 1_600_000_000
HOUR = 3600
KINDS = ("add", "remove", "rename")


@dataclass(frozen=True)
class Change:
    """One commit: its message and the new content of the files it touches."""

    message: str
    files: dict[str, str]


def render(module: str, fields: list[str]) -> str:
    """The file of ``module`` with ``fields``, in order."""
    lines = [f"class {module.capitalize()}:\n", "    def __init__(self):\n"]
    lines += [f"        self._{field} = 0\n" for field in fields]
    for field in fields:
        lines += ["\n", f"    def get_{field}(self):\n", f"        return self._{field}\n"]
    return "".join(lines)


class History:
    """The files' fields as commits change them, and the seeded draw of each next change."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fields = {
            (package, module): self.rng.sample(FIELDS, FIRST_FIELDS)
            for package in PACKAGES
            for module in MODULES
        }

    def _files(self, key: tuple[str, str]) -> dict[str, str]:
        package, module = key
        return {f"{package}/{module}.py": render(module, self.fields[key])}

    def next_change(self) -> Change:
        """Draw a kind the drawn file allows, apply it, and return the commit."""
        while True:
            kind = self.rng.choice(KINDS)
            key = self.rng.choice(sorted(self.fields))
            fields, module = self.fields[key], key[1]
            unused = [field for field in FIELDS if field not in fields]
            if kind == "add" and len(fields) < MAX_FIELDS:
                field = self.rng.choice(unused)
                fields.insert(self.rng.randrange(len(fields) + 1), field)
                return Change(f"{module}: add get_{field}", self._files(key))
            if kind == "remove" and len(fields) > MIN_FIELDS:
                field = self.rng.choice(fields)
                fields.remove(field)
                return Change(f"{module}: remove get_{field}", self._files(key))
            if kind == "rename":
                old, new = self.rng.choice(fields), self.rng.choice(unused)
                fields[fields.index(old)] = new
                return Change(f"{module}: rename get_{old} to get_{new}", self._files(key))

    def initial(self) -> Change:
        """The root commit: every file with its first fields."""
        files = [self._files(key) for key in sorted(self.fields)]
        return Change("Add the first modules", {k: v for f in files for k, v in f.items()})


def build(path: Path, commits: int, seed: int = 0) -> Path:
    """Create the repository at ``path``: a root commit and ``commits`` changes on ``main``."""
    history = History(seed)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    process = subprocess.Popen(
        ["git", "-C", str(path), "fast-import", "--quiet"], stdin=subprocess.PIPE
    )
    assert process.stdin is not None
    write = process.stdin.write
    for number in range(commits + 1):
        change = history.initial() if number == 0 else history.next_change()
        when = START + number * HOUR
        message = (change.message + "\n").encode()
        write(f"commit refs/heads/main\nmark :{number + 1}\n".encode())
        write(f"author Ada Author <ada@example.org> {when} +0000\n".encode())
        write(f"committer Ada Author <ada@example.org> {when} +0000\n".encode())
        write(f"data {len(message)}\n".encode() + message)
        if number:
            write(f"from :{number}\n".encode())
        for name, content in change.files.items():
            blob = content.encode()
            write(f"M 100644 inline {name}\ndata {len(blob)}\n".encode() + blob + b"\n")
    process.stdin.close()
    if process.wait():
        raise RuntimeError("git fast-import failed")
    subprocess.run(["git", "-C", str(path), "reset", "-q", "--hard", "main"], check=True)
    return path
