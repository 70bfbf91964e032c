"""File name -> language name, for the snapshot's ``language`` column.

By extension (and a few well-known file names), like GitHub's linguist does first; content
sniffing is not worth its cost here. Unknown files are ``"text"``: they are still code-base
knowledge (configuration, docs), the column only lets a user filter or weight them.
"""

from pathlib import PurePosixPath

_BY_EXTENSION = {
    ".py": "python", ".pyi": "python", ".ipynb": "jupyter",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript",
    ".go": "go", ".rs": "rust", ".java": "java", ".kt": "kotlin", ".kts": "kotlin",
    ".scala": "scala", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp",
    ".hh": "cpp", ".hpp": "cpp", ".cs": "csharp", ".rb": "ruby", ".php": "php",
    ".swift": "swift", ".m": "objective-c", ".mm": "objective-c", ".r": "r", ".jl": "julia",
    ".lua": "lua", ".pl": "perl", ".pm": "perl", ".hs": "haskell", ".ml": "ocaml",
    ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".clj": "clojure", ".dart": "dart",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".ps1": "powershell",
    ".sql": "sql", ".html": "html", ".htm": "html", ".css": "css", ".scss": "css",
    ".vue": "vue", ".svelte": "svelte", ".md": "markdown", ".rst": "restructuredtext",
    ".tex": "tex", ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".ini": "ini", ".cfg": "ini", ".xml": "xml", ".proto": "protobuf", ".smk": "snakemake",
    ".cmake": "cmake", ".mk": "makefile", ".tf": "terraform", ".nix": "nix",
}  # fmt: skip
_BY_NAME = {
    "Makefile": "makefile", "GNUmakefile": "makefile", "Dockerfile": "dockerfile",
    "Snakefile": "snakemake", "CMakeLists.txt": "cmake", "Jenkinsfile": "groovy",
}  # fmt: skip


def language(path: str) -> str:
    """The language of ``path`` by its file name, then its extension; ``"text"`` if unknown."""
    name = PurePosixPath(path).name
    if name in _BY_NAME:
        return _BY_NAME[name]
    return _BY_EXTENSION.get(PurePosixPath(name).suffix.lower(), "text")
