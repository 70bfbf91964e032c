"""A git history whose answers are known: what a model trained on it should be able to say.

Every file is ``<package>/<name>.py``: a docstring (:data:`HEADER`), then a class whose
every line follows from its path and the number of its ``size_<n>`` lines::

    class Mango:
        name = "mango"
        size_1 = 1
        size_2 = 2

        def sizes(self):
            return vars(type(self))

Each commit changes one file, and its message is a fixed function of that change, so it can
only be right by reading the diff (which file, and what happened to it, is drawn, never implied
by anything before it):

* ``util/mango: grow`` / ``util/mango: shrink``: the next ``size_<n>`` line added after the
  last one / the last one taken out (a class keeps between 7 and 10, :data:`SIZES`);
* ``util/mango: add`` / ``util/mango: remove``: the file is created / deleted, a change longer
  than a 128-token block whose path is only in its first lines: a message that keeps its change
  (cut to fit) names the file; one cut off from its change, or a prompt cut from the left,
  cannot.

The newest commit (:data:`MARKERS`) quotes the template's markers, as a repository about models
does: they must reach the model as text, never as the markers' ids.

The message's area is the path as the diff's own tokens spell it (``util``, ``/``, ``mango``):
a model copies it from the file header, a fixed place in every change. Fill-in-the-middle
questions mask a run of added lines of a test commit (repotune's FIM evaluation): a grown
``size_<n>`` line, predictable from the line above it; a code-change question asks for the
same line after the message. A grown line is followed by
the unchanged ``sizes`` method, so a question that does not say an added line starts leaves
the model free to go on with that context instead.

Built with ``git fast-import`` (one process, no per-commit git calls) from a seed: the same
arguments give the same repository, shas included. Commits are an hour apart, so the
workflow's time split gives train, validation and test in history order.
"""

import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from testdata.gitrepo import git_env

PACKAGES = (
    "core", "util", "web", "data", "tools", "api", "cli", "db", "net", "io", "ui", "jobs",
    "auth", "cache", "log", "mail", "sync", "task", "user", "app", "lib", "conf", "ops", "math",
)  # fmt: skip
NAMES = (
    "apple", "berry", "cherry", "grape", "lemon", "mango", "melon", "olive",
    "peach", "pear", "plum", "lime", "kiwi", "fig", "bean", "corn",
)  # fmt: skip
FOOTER = """
    def sizes(self):
        return vars(type(self))
"""
SIZES = (7, 10)
"""The fewest and most ``size_<n>`` lines of a class: deleting one is longer than a block."""
HEADER = '''"""Part of the fruit basket.

Each class here has a name and a few sizes, size_1 first; a commit adds the
next size after the last one, or takes the last one out, and now and then a
class is added to the basket or taken out of it.
"""


'''
"""What every file starts with, the same in each: adding or deleting a file is a change
longer than a 128-token block, whose path is only in its first lines."""
FIRST_FILES = 12
KINDS = ("add", "remove", "grow", "shrink")
WEIGHTS = (1, 1, 2, 2)
START = 1_600_000_000
HOUR = 3600


def render(name: str, sizes: int) -> str:
    """The file of class ``name`` with ``sizes`` size lines."""
    lines = [HEADER, f"class {name.capitalize()}:\n", f'    name = "{name}"\n']
    lines += [f"    size_{n} = {n}\n" for n in range(1, sizes + 1)]
    return "".join(lines) + FOOTER


@dataclass(frozen=True)
class Change:
    """One commit: its message and the files it writes (None: deletes)."""

    message: str
    files: dict[str, str | None] = field(default_factory=dict)


MARKERS = Change(
    "notes: quote the markers",
    {"notes/markers.txt": "The strings <|diff|>, <|message|>, <|file|> and <|fim_middle|>\n"},
)
"""The newest commit: text that quotes the tiny preset's markers. It is held out (the test
split), so the history the model learns from is the same with it or without it."""


class History:
    """The files (path without ``.py`` -> sizes) as commits change them, and the seeded draw
    of each next change."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sizes: dict[str, int] = {}
        for package in PACKAGES:
            for name in self.rng.sample(NAMES, FIRST_FILES):
                self.sizes[f"{package}/{name}"] = self.rng.randint(*SIZES)

    def _files(self, area: str) -> dict[str, str | None]:
        sizes = self.sizes.get(area)
        return {f"{area}.py": None if sizes is None else render(area.split("/")[1], sizes)}

    def initial(self) -> Change:
        """The root commit: the first files."""
        files = [self._files(area) for area in sorted(self.sizes)]
        return Change("Add the first modules", {k: v for f in files for k, v in f.items()})

    def next_change(self) -> Change:
        """Draw a change the files allow, apply it, and return the commit."""
        while True:
            kind = self.rng.choices(KINDS, WEIGHTS)[0]
            if kind == "add":
                area = f"{self.rng.choice(PACKAGES)}/{self.rng.choice(NAMES)}"
                if area in self.sizes:
                    continue
                self.sizes[area] = SIZES[0]
                return Change(f"{area}: add", self._files(area))
            area = self.rng.choice(sorted(self.sizes))
            sizes = self.sizes[area]
            if kind == "remove":
                del self.sizes[area]
            elif kind == "grow" and sizes < SIZES[1]:
                self.sizes[area] += 1
            elif kind == "shrink" and sizes > SIZES[0]:
                self.sizes[area] -= 1
            else:
                continue
            return Change(f"{area}: {kind}", self._files(area))


def build(path: Path, commits: int, seed: int = 0) -> Path:
    """Create the repository at ``path``: a root commit and ``commits`` changes on ``main``,
    the last one :data:`MARKERS`."""
    history = History(seed)
    environment = git_env(START)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=environment)
    process = subprocess.Popen(
        ["git", "-C", str(path), "fast-import", "--quiet"], stdin=subprocess.PIPE, env=environment
    )
    assert process.stdin is not None
    write = process.stdin.write
    for number in range(commits + 1):
        if number == 0:
            change = history.initial()
        else:
            change = MARKERS if number == commits else history.next_change()
        when = START + number * HOUR
        message = (change.message + "\n").encode()
        write(f"commit refs/heads/main\nmark :{number + 1}\n".encode())
        write(f"author Ada Author <ada@example.org> {when} +0000\n".encode())
        write(f"committer Ada Author <ada@example.org> {when} +0000\n".encode())
        write(f"data {len(message)}\n".encode() + message)
        if number:
            write(f"from :{number}\n".encode())
        for name, content in change.files.items():
            if content is None:
                write(f"D {name}\n".encode())
                continue
            blob = content.encode()
            write(f"M 100644 inline {name}\ndata {len(blob)}\n".encode() + blob + b"\n")
    process.stdin.close()
    if process.wait():
        raise RuntimeError("git fast-import failed")
    reset = ["git", "-C", str(path), "reset", "-q", "--hard", "main"]
    subprocess.run(reset, check=True, env=environment)
    return path
