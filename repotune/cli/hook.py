"""``repotune hook install | uninstall``: a ``prepare-commit-msg`` hook that pre-fills messages.

As opencommit and aicommits do, the hook only pre-fills the message: the user still edits and
confirms it in the editor. It remembers the ``--results``, ``--model`` and ``--timeout`` it
was installed with, and it **never blocks or fails a commit**:

* a message already given (``-m``, ``-F``), merges, squashes and amends (``-c``, ``-C``,
  ``--amend``) are left alone: git passes the source, and only "no source" and "template" get
  a suggestion;
* any error, a missing run, a broken model, no Python, is one line on stderr and exit 0, with
  the message file untouched (git's normal template);
* the suggestion has ``--timeout`` seconds; past it the commit goes on without one.

The suggestion comes from ``repotune serve`` when one runs for the model (a warm model: well
under a second), else the model is loaded in the hook's process, as ``repotune suggest``
does. Unless installed with ``--no-serve``, the hook starts that server in the background when
none runs (its first use) and asks it once it is ready, so every later commit is fast; the
server stops after ``--idle-timeout`` seconds without a request. A server that is down or
answers an error is, like a timeout, one line on stderr and a commit without a suggestion.

The hooks directory is the one git runs: ``core.hooksPath`` when set, else the repository's
``hooks/``. A hook is repotune's only when it is exactly what ``install`` writes, for the
settings it names (:func:`is_ours`): one that merely mentions repotune, or repotune's hook
edited by hand, is somebody else's, never replaced without ``--force`` (then it is kept beside
as ``prepare-commit-msg.repotune-backup``) and never removed by ``uninstall``.
"""

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import repotune
from repotune.atomic import write_text
from repotune.cli.diff import git_toplevel
from repotune.cli.run import results_dir
from repotune.errors import InputError
from repotune.serve.client import ServerError
from repotune.serve.state import DEFAULT_IDLE_TIMEOUT

HOOK_NAME = "prepare-commit-msg"
MARKER = "# repotune prepare-commit-msg hook"
BACKUP_SUFFIX = ".repotune-backup"
DEFAULT_TIMEOUT = 30.0
# Sources git passes for which a message already exists: -m/-F, merge, squash, -c/-C/--amend.
SKIPPED_SOURCES = ("message", "merge", "squash", "commit")
HELP = "install or remove the prepare-commit-msg hook that pre-fills commit messages"
EXAMPLES = """examples:
  repotune hook install                       # uses ./results (or $REPOTUNE_RESULTS)
  repotune hook install --results ~/runs/myrepo/results --timeout 10
  repotune hook install --no-serve            # always load the model in the hook (slow)
  repotune hook uninstall
"""


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "hook",
        help=HELP,
        description=HELP + ".",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = actions.add_parser("install", parents=[common], help="write the hook")
    install.add_argument(
        "--force", action="store_true", help="replace a hook repotune did not write"
    )
    install.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds a suggestion may take"
    )
    install.add_argument(
        "--no-serve",
        action="store_true",
        help="never start `repotune serve` (by default the first commit starts it)",
    )
    install.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help=f"a server the hook starts stops after this long idle (default "
        f"{DEFAULT_IDLE_TIMEOUT:g})",
    )
    install.set_defaults(handler=install_command)
    uninstall = actions.add_parser("uninstall", parents=[common], help="remove the hook")
    uninstall.set_defaults(handler=uninstall_command)
    hook_run = actions.add_parser("run", parents=[common], help="what the hook calls (internal)")
    hook_run.add_argument("message_file")
    hook_run.add_argument("source", nargs="?", default="")
    hook_run.add_argument("sha", nargs="?", default="")
    hook_run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    hook_run.add_argument(
        "--serve-idle", type=float, default=0.0, help="start a server idling this long (0: none)"
    )
    hook_run.set_defaults(handler=run_command)


def hooks_dir(repo: str | Path) -> Path:
    """The directory git runs hooks from: ``core.hooksPath`` (relative to the work tree's top)
    or the repository's own ``hooks/``."""
    top = git_toplevel(repo)
    configured = subprocess.run(
        ["git", "-C", str(top), "config", "--path", "core.hooksPath"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if configured:
        return (top / configured).resolve()
    common = subprocess.run(
        ["git", "-C", str(top), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(common) / "hooks"


@dataclass(frozen=True)
class HookSettings:
    """What a hook file is made of: the interpreter and package it runs, and the install-time
    options it passes on."""

    python: str
    package_root: str
    results: str
    timeout: float
    device: str
    model: str | None = None
    serve_idle: float | None = None
    """Idle timeout of the server the hook starts; 0: it starts none; None: a hook written
    before the hook could start one (it still asks a running server)."""

    @classmethod
    def here(
        cls, results: Path, model: str | None, timeout: float, device: str, serve_idle: float
    ) -> "HookSettings":
        """The settings ``install`` writes: this interpreter and this checkout of repotune."""
        package_root = str(Path(repotune.__file__).resolve().parent.parent)
        return cls(sys.executable, package_root, str(results), timeout, device, model, serve_idle)


_PATH_LINE = "PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}} \\"
_COMMAND_SUFFIX = ' -- "$@" </dev/null ||'


def hook_script(settings: HookSettings) -> str:
    """The hook: calls ``python -m repotune hook run`` with the install-time settings, and
    exits 0 whatever happens."""
    options = ["--results", settings.results, "--timeout", str(settings.timeout)]
    options += ["--device", settings.device]
    if settings.model:
        options += ["--model", settings.model]
    if settings.serve_idle is not None:
        options += ["--serve-idle", str(settings.serve_idle)]
    command = [settings.python, "-m", "repotune", "hook", "run", *options]
    return (
        "#!/bin/sh\n"
        f"{MARKER} (written by `repotune hook install`; remove with `repotune hook uninstall`).\n"
        "# It only pre-fills the message, and never blocks a commit.\n"
        + _PATH_LINE.format(root=shlex.quote(settings.package_root))
        + "\n"
        f"  {shlex.join(command)}{_COMMAND_SUFFIX}\n"
        '  echo "repotune hook: could not run; committing without a suggestion" >&2\n'
        "exit 0\n"
    )


def installed_settings(text: str) -> HookSettings | None:
    """The settings a hook's text names, read back from its two command lines; None when it
    does not have their shape."""
    lines = text.split("\n")
    if len(lines) != 8:
        return None
    path_line, command_line = lines[3], lines[4]
    head, tail = _PATH_LINE.split("{root}")
    tail = tail.replace("{{", "{").replace("}}", "}")
    if not (path_line.startswith(head) and path_line.endswith(tail)):
        return None
    if not (command_line.startswith("  ") and command_line.endswith(_COMMAND_SUFFIX)):
        return None
    try:
        root = shlex.split(path_line[len(head) : -len(tail)])
        command = shlex.split(command_line[2 : -len(_COMMAND_SUFFIX)])
    except ValueError:
        return None
    if len(root) != 1 or command[1:5] != ["-m", "repotune", "hook", "run"]:
        return None
    options = dict(zip(command[5::2], command[6::2], strict=False))
    if len(command) % 2 == 0 or not {"--results", "--timeout", "--device"} <= set(options):
        return None
    try:
        timeout = float(options["--timeout"])
        serve_idle = float(options["--serve-idle"]) if "--serve-idle" in options else None
    except ValueError:
        return None
    return HookSettings(
        command[0], root[0], options["--results"], timeout, options["--device"],
        options.get("--model"), serve_idle,
    )  # fmt: skip


def is_ours(path: Path) -> bool:
    """Whether the hook at ``path`` is, byte for byte, what ``install`` writes for the
    settings it names."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    settings = installed_settings(text)
    return settings is not None and hook_script(settings) == text


def install_command(args: argparse.Namespace) -> int:
    if args.idle_timeout <= 0:
        raise InputError("--idle-timeout", "must be positive", "give seconds, or pass --no-serve")
    directory = hooks_dir(args.repo)
    path = directory / HOOK_NAME
    if path.exists() and not is_ours(path):
        if not args.force:
            raise InputError(
                f"hook '{path}'",
                "exists and was not written by repotune",
                "pass --force to replace it (it is kept as a backup)",
            )
        path.replace(path.with_name(HOOK_NAME + BACKUP_SUFFIX))
    directory.mkdir(parents=True, exist_ok=True)
    results = results_dir(args.results)
    serve_idle = 0.0 if args.no_serve else args.idle_timeout
    settings = HookSettings.here(results, args.model, args.timeout, args.device, serve_idle)
    write_text(path, hook_script(settings))
    path.chmod(0o755)
    print(f"installed {path} (results: {results}); `git commit` now pre-fills the message")
    return 0


def uninstall_command(args: argparse.Namespace) -> int:
    path = hooks_dir(args.repo) / HOOK_NAME
    if not path.exists():
        print(f"no hook at {path}; nothing to remove")
        return 0
    if not is_ours(path):
        raise InputError(
            f"hook '{path}'", "was not written by repotune", "remove it yourself if you mean to"
        )
    path.unlink()
    backup = path.with_name(HOOK_NAME + BACKUP_SUFFIX)
    if backup.exists():
        backup.replace(path)
        print(f"removed the repotune hook; restored the earlier hook at {path}")
    else:
        print(f"removed {path}")
    return 0


def _suggest(args: argparse.Namespace, deadline: float) -> list[str]:
    """The suggestions for the staged change: from the running server (started first unless
    the hook says not to), else from the model loaded here."""
    from repotune.cli.diff import staged_files
    from repotune.cli.run import find_run, load
    from repotune.cli.suggest import change_commit
    from repotune.serve import client

    finished = find_run(results_dir(args.results), args.model)
    commit = change_commit(staged_files(args.repo), finished, "the staged change")
    if args.serve_idle > 0:
        server = client.ensure(
            finished.results, finished.model, args.device, args.serve_idle, deadline
        )
    else:
        server = client.find(finished.results, finished.model)
    if server is not None:
        left = deadline - time.monotonic()
        return client.commit_messages(server, commit["files"], {}, left)
    from repotune.cli.suggest import suggestions
    from repotune.inference.decoding import Decoding

    return suggestions(load(finished, args.device), commit, Decoding())


def _prefill(args: argparse.Namespace, deadline: float) -> None:
    """Write the first suggestion above what git put in the message file."""
    found = _suggest(args, deadline)
    if not found:
        raise InputError("the model", "suggested an empty message", "write the message yourself")
    path = Path(args.message_file)
    existing = path.read_text(encoding="utf-8", errors="replace")
    write_text(path, found[0] + "\n" + existing)  # whole or not at all, even at the timeout


def run_command(args: argparse.Namespace) -> int:
    """The hook's body: pre-fill within the timeout, or say why not in one line; always 0."""
    if args.source in SKIPPED_SOURCES:
        return 0
    failure: list[str] = []
    deadline = time.monotonic() + args.timeout

    def work() -> None:
        try:
            _prefill(args, deadline)
        except Exception as error:  # the hook must never fail a commit, whatever went wrong
            known = isinstance(error, InputError | ServerError)
            failure.append(str(error) if known else repr(error))

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(args.timeout)
    if worker.is_alive():
        failure.append(f"no suggestion within {args.timeout:g} s")
    if failure:
        line = " ".join(failure[0].split())
        print(f"repotune hook: {line}; committing without a suggestion", file=sys.stderr)
        sys.stderr.flush()
        os._exit(0)  # a worker still running must not hold the commit
    return 0
