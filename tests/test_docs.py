"""The documentation stays short, its links resolve, and every command it shows is run by a test
or is listed, with a reason, as not run by tests.

A test that runs a command shown in the docs says so with ``@pytest.mark.documented(COMMAND,
...)``, COMMAND being the line as the docs show it (without its ``# comment``); the test may
put a fixture in place of a placeholder such as ``/path/to/your/repo`` and may run it as a dry
run. The commands no test runs are listed once, each with its reason, under "Commands not run by
tests" in CONTRIBUTING.md. Pure text: the test modules are parsed, never imported or run.
"""

import ast
import functools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The pages whose commands must be run or listed. BENCHMARKS.md is not among them: each of its
# commands is a benchmark (`make bench`), run to measure, never by the tests.
COMMAND_PAGES = sorted(
    [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "config" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)
LINK_PAGES = sorted([*COMMAND_PAGES, ROOT / "BENCHMARKS.md"])
README_LIMIT = 200
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
# Lines that only prepare the shell for the commands after them.
SETUP_WORDS = {"cd", "export"}
UNTESTED_HEADING = "## Commands not run by tests"
MARK = "documented"
OUR_PROGRAMS = {"repotune", "snakemake", "make", "python"}

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>.*)$")


def fenced_blocks(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """(line number of the opening fence, its language, the block's lines) of each fenced code
    block; a fence without a language yields ``""``."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, start, body = opening["fence"], index + 1, []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index])
            index += 1
        index += 1
        yield start, opening["info"].strip().split(" ")[0], body


def without_comment(line: str) -> str:
    """``line`` with a trailing ``# comment`` removed (a ``#`` inside quotes, or not after a
    blank, is part of the command)."""
    quote = None
    for position, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (position == 0 or line[position - 1].isspace()):
            return line[:position].rstrip()
    return line.rstrip()


def block_commands(body: list[str]) -> list[str]:
    """The commands of a shell block: one per line, ``\\``-continued lines joined, comments,
    blank lines and shell set-up (``cd``, ``export``, also before ``&&``) left out."""
    commands, pending = [], ""
    for raw in body:
        line = without_comment(raw.strip())
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        command = " ".join((pending + line).split())
        pending = ""
        while command.split(" ", 1)[0] in SETUP_WORDS and " && " in command:
            command = command.split(" && ", 1)[1]  # `cd DIR && ollama create ...`
        if command and command.split()[0] not in SETUP_WORDS:
            commands.append(command)
    return commands


def _name(page: Path) -> str:
    """A page's path as a message names it: relative to the project, where it lies in it."""
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def documented_commands(pages: list[Path] = COMMAND_PAGES) -> dict[str, list[str]]:
    """Every command shown in a shell block of ``pages``: command -> where it is shown."""
    found: dict[str, list[str]] = {}
    for page in pages:
        for line, language, body in fenced_blocks(page.read_text(encoding="utf-8")):
            if language in SHELL_LANGUAGES:
                for command in block_commands(body):
                    found.setdefault(command, []).append(f"{_name(page)}:{line}")
    return found


def untested_commands(text: str) -> dict[str, str]:
    """The list under "Commands not run by tests": command -> reason. Each entry is a line
    ``- `COMMAND`: reason``."""
    section = text.split(UNTESTED_HEADING, 1)[1].split("\n## ", 1)[0]
    entries = re.findall(r"^- `([^`]+)`: (.+)$", section, re.MULTILINE)
    return {command: reason for command, reason in entries}


def _strings(node: ast.expr, constants: dict[str, ast.expr]) -> list[str]:
    """The string literals a marker argument stands for: a literal, or a module-level name
    bound to a literal, a tuple/list of them, or a dict whose keys they are."""
    if isinstance(node, ast.Starred):
        node = node.value
    if isinstance(node, ast.Name) and node.id in constants:
        node = constants[node.id]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Dict):
        elements: list[ast.expr] = [key for key in node.keys if key is not None]
    elif isinstance(node, ast.Tuple | ast.List):
        elements = list(node.elts)
    else:
        raise ValueError(f"line {node.lineno}: a {MARK} marker takes string literals or names")
    return [value for element in elements for value in _strings(element, constants)]


def _is_mark(decorator: ast.expr) -> bool:
    """``pytest.mark.documented(...)``."""
    return (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == MARK
        and isinstance(decorator.func.value, ast.Attribute)
        and decorator.func.value.attr == "mark"
    )


@functools.cache
def registered_commands(tests: Path = ROOT / "tests") -> dict[str, list[str]]:
    """Command -> the tests (``file::name``) marked as running it, from the test modules' source."""
    registered: dict[str, list[str]] = {}
    for module in sorted(tests.glob("test_*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        constants = {
            target.id: statement.value
            for statement in tree.body
            if isinstance(statement, ast.Assign)
            for target in statement.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            decorators = getattr(node, "decorator_list", [])
            for decorator in filter(_is_mark, decorators):
                if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                    raise ValueError(f"{module.name}: a {MARK} marker is on a test function only")
                for argument in decorator.args:
                    for command in _strings(argument, constants):
                        registered.setdefault(command, []).append(f"{module.name}::{node.name}")
    return registered


def _options(command: str) -> set[str]:
    """The options a command passes to this project's programs (``--config``, ``-n``; the part
    before any ``=``); those of git, grep or printf beside them in a pipeline are not ours."""
    options = set()
    for part in re.split(r"\|\|?|&&|;", command):
        words = shlex.split(part)
        if words and Path(words[0]).name in OUR_PROGRAMS:
            options |= {
                word.split("=", 1)[0]
                for word in words[1:]
                if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", word)
            }
    return options


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces as ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (a repeated heading gets ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    result = set()
    text = page.read_text(encoding="utf-8")
    code = {
        n for start, _, body in fenced_blocks(text) for n in range(start, start + len(body) + 1)
    }
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.match(r"^#{1,6} (.+)$", line)
        if match and number not in code:
            anchor = github_anchor(match[1])
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def relative_links(page: Path) -> Iterator[str]:
    """The targets of a page's Markdown links and images that are not URLs, outside code."""
    text = page.read_text(encoding="utf-8")
    blocks = {
        n for start, _, body in fenced_blocks(text) for n in range(start, start + len(body) + 1)
    }
    for number, line in enumerate(text.splitlines(), start=1):
        if number in blocks:
            continue
        prose = re.sub(r"`[^`]*`", "", line)
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                yield target


# --- the checks on the project's docs ------------------------------------------------------------


def test_readme_is_at_most_200_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_LIMIT, f"README.md has {lines} lines; move detail to docs/"


@pytest.mark.parametrize("page", LINK_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{_name(page)}: " + "; ".join(broken)


def test_every_code_block_names_its_language():
    """A block without a language would hide its commands from the check below."""
    bare = [
        f"{_name(page)}:{line}"
        for page in COMMAND_PAGES
        for line, language, _ in fenced_blocks(page.read_text(encoding="utf-8"))
        if not language
    ]
    assert not bare, f"code blocks without a language (```bash, ```yaml, ```text): {bare}"


def test_every_documented_command_is_run_by_a_test_or_listed_as_untested():
    shown = documented_commands()
    run = registered_commands()
    untested = untested_commands((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    missing = {command: where for command, where in shown.items() if command not in run | untested}
    assert not missing, (
        "commands shown in the docs that no test runs and CONTRIBUTING.md does not list as "
        "untested: mark the test that runs one with @pytest.mark.documented(COMMAND), or list "
        f"it with its reason under '{UNTESTED_HEADING}': {missing}"
    )


def test_no_command_is_both_run_and_listed_as_untested():
    untested = untested_commands((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    both = sorted(set(untested) & set(registered_commands()))
    assert not both, f"listed as not run by tests, yet a test is marked as running it: {both}"


def test_registered_and_listed_commands_are_still_shown():
    """A marker or list entry for a command the docs no longer show is stale."""
    shown = documented_commands()
    untested = untested_commands((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    stale = sorted((set(registered_commands()) | set(untested)) - set(shown))
    assert not stale, f"no page shows these commands any more: {stale}"


def test_each_listed_command_says_why():
    untested = untested_commands((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    assert untested, f"CONTRIBUTING.md has no entries under '{UNTESTED_HEADING}'"
    assert all(len(reason.split()) >= 3 for reason in untested.values()), untested


def test_a_test_marked_as_running_a_command_passes_its_options():
    """A cheap guard against a marker on a test that runs something else: each option of the
    command (``--seed``, ``--config``) appears in the marked test's module."""
    lacking = []
    for command, tests in registered_commands().items():
        for test in tests:
            source = (ROOT / "tests" / test.split("::")[0]).read_text(encoding="utf-8")
            lacking += [f"{test}: {option}" for option in _options(command) if option not in source]
    assert not lacking, f"marked tests that never pass these options: {lacking}"


# --- the checker itself, on made-up pages ---------------------------------------------------------


def test_commands_are_read_from_shell_blocks_only(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text with `make inline`.\n\n"
        "```bash\n"
        "cd /somewhere\n"
        "cd results && ollama create tiny -f Modelfile\n"
        "export X=1\n"
        "make run   # a comment\n"
        "\n"
        "# a whole-line comment\n"
        "git diff | grep -v '^index #x' \\\n"
        "    | tool --flag\n"
        "```\n\n"
        "```yaml\nkey: value\n```\n\n"
        "```text\nmake picture\n```\n"
    )
    found = documented_commands([page])
    assert list(found) == [
        "ollama create tiny -f Modelfile",
        "make run",
        "git diff | grep -v '^index #x' | tool --flag",
    ]
    assert found["make run"] == [f"{page}:3"]


def test_markers_are_read_from_literals_names_and_dict_keys(tmp_path):
    (tmp_path / "test_example.py").write_text(
        "import pytest\n"
        "TABLE = {'cmd b': 1, 'cmd c': 2}\n"
        "@pytest.mark.slow\n"
        "@pytest.mark.documented('cmd a', *TABLE)\n"
        "def test_one():\n"
        "    pass\n"
        "def test_unmarked():\n"
        "    pass\n"
    )
    assert registered_commands(tmp_path) == {
        "cmd a": ["test_example.py::test_one"],
        "cmd b": ["test_example.py::test_one"],
        "cmd c": ["test_example.py::test_one"],
    }


def test_a_marker_off_a_test_function_is_an_error(tmp_path):
    (tmp_path / "test_example.py").write_text(
        "import pytest\n@pytest.mark.documented('cmd')\ndef helper():\n    pass\n"
    )
    with pytest.raises(ValueError, match="on a test function only"):
        registered_commands(tmp_path)


def test_the_untested_list_is_read_with_its_reasons():
    text = (
        "# Contributing\n\n## Commands not run by tests\n\n"
        "- `make run`: the workflow on this repository, minutes\n"
        "- `ollama run tiny`: needs Ollama\n\n## Next\n\n- `make other`: not in the section\n"
    )
    assert untested_commands(text) == {
        "make run": "the workflow on this repository, minutes",
        "ollama run tiny": "needs Ollama",
    }


def test_links_and_anchors_are_checked(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Quick start (`make run`)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#quick-start-make-run) [url](https://example.org/x) `[code](nope.md)`\n"
        "```text\n[in a block](nope.md)\n```\n[bad](missing.md) ![img](other.md#nowhere)\n"
    )
    assert list(relative_links(page)) == [
        "other.md#quick-start-make-run",
        "missing.md",
        "other.md#nowhere",
    ]
    assert anchors(tmp_path / "other.md") == {"other-page", "quick-start-make-run"}


def test_options_are_the_words_that_start_with_a_dash():
    command = ".venv/bin/snakemake --cores 8 --config tokenize='{seq_len: 512}' -n"
    assert _options(command) == {"--cores", "--config", "-n"}
    assert _options("git diff HEAD~1 | repotune suggest --stdin") == {"--stdin"}
    assert _options("git add -p && repotune suggest -n 3") == {"-n"}
