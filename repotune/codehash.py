"""The hash of the code a stage runs: its script's import closure within ``repotune``.

Snakemake reruns a rule when its script changes, not when a module the script imports does.
Each rule therefore carries, as a params value, the hash of every ``repotune`` module its
script imports directly or indirectly (plus the packages' ``__init__`` files on the way and any
sibling file a module runs by path, ``Path(__file__).with_name("x.py")``). Editing training code
then reruns train and what follows; editing a module no stage imports reruns nothing.

Imports are read with :mod:`ast` without importing anything, and cached by file content, so
planning stays cheap. Imports inside functions count too: they run when the stage does.
"""

import ast
import hashlib
import json
from pathlib import Path

from repotune.atomic import write_text

PACKAGE = "repotune"


def _module_file(root: Path, name: str) -> Path | None:
    """The file of a dotted module name under ``root``: ``a/b.py`` or ``a/b/__init__.py``."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' __init__."""
    parts = name.split(".")
    return [".".join(parts[: end + 1]) for end in range(len(parts))]


def _references(source: bytes, package: list[str]) -> tuple[list[str], list[str]]:
    """The module names a file's source imports (absolute, with ``from a import b`` giving
    both ``a`` and ``a.b``) and the sibling files it runs by path. ``package`` is the file's
    package as parts, the base of relative imports."""
    names: set[str] = set()
    siblings: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *filter(None, [node.module])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "with_name"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).endswith(".py")
        ):
            siblings.add(str(node.args[0].value))
    return sorted(names), sorted(siblings)


class CodeHasher:
    """Code hashes of the scripts of one workflow directory ``root``.

    What a file imports depends only on its bytes and its package, so it is cached by content
    hash in ``cache_file`` (JSON; optional): a no-op plan reads and hashes the files but
    parses none of them.
    """

    def __init__(self, root: str | Path, cache_file: str | Path | None = None) -> None:
        self.root = Path(root).resolve()
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._cache: dict[str, list[list[str]]] = {}
        if self.cache_file is not None and self.cache_file.is_file():
            try:
                self._cache = json.loads(self.cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._cache = {}
        self._changed = False
        self._files: dict[Path, tuple[str, list[Path]]] = {}
        self._hashes: dict[Path, str] = {}

    def _file(self, path: Path) -> tuple[str, list[Path]]:
        """A file's sha256 and the ``repotune`` files it imports or runs by path."""
        if path not in self._files:
            source = path.read_bytes()
            digest = hashlib.sha256(source).hexdigest()
            package = list(path.relative_to(self.root).parts[:-1])
            key = f"{'.'.join(package)}:{digest}"
            if key not in self._cache:
                self._cache[key] = list(_references(source, package))
                self._changed = True
            names, siblings = self._cache[key]
            found = {path.with_name(name) for name in siblings if path.with_name(name).is_file()}
            for name in names:
                if name == PACKAGE or name.startswith(PACKAGE + "."):
                    for module in _with_parents(name):
                        module_file = _module_file(self.root, module)
                        if module_file is not None:
                            found.add(module_file)
            self._files[path] = (digest, sorted(found))
        return self._files[path]

    def closure(self, script: str | Path) -> list[Path]:
        """Every ``repotune`` file ``script`` imports, directly or not, sorted."""
        start = (self.root / script).resolve()
        seen: set[Path] = set()
        todo = [start]
        while todo:
            for found in self._file(todo.pop())[1]:
                if found not in seen:
                    seen.add(found)
                    todo.append(found)
        seen.discard(start)
        return sorted(seen)

    def hash(self, script: str | Path) -> str:
        """sha256 over the paths (relative to the root) and contents of ``script``'s closure:
        equal for a copied workflow, different after any edit to a module the script runs."""
        start = (self.root / script).resolve()
        if start not in self._hashes:
            digest = hashlib.sha256()
            for path in self.closure(start):
                relative = path.relative_to(self.root).as_posix()
                digest.update(f"{relative}\0{self._file(path)[0]}\n".encode())
            self._hashes[start] = digest.hexdigest()
            self.save()
        return self._hashes[start]

    def save(self) -> None:
        """Write the import cache if it learnt something (best effort: it is only a cache)."""
        if self.cache_file is None or not self._changed:
            return
        try:
            write_text(self.cache_file, json.dumps(self._cache, sort_keys=True))
            self._changed = False
        except OSError:
            pass
