"""``repotune``: use a trained model from the repository you work in.

Subcommands live in their own modules (suggest, hook, complete, inspect, serve); this one only
builds the parser and turns a :class:`repotune.errors.InputError` into one line on stderr and
exit code 1. Heavy imports (torch, transformers) happen inside the subcommands, so ``--help``
is instant.
"""

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from repotune.cli import complete, hook, inspect, serve, suggest
from repotune.errors import InputError
from repotune.logs import exit_now

DESCRIPTION = """Use the model a repotune run trained on your repository's history.

Every subcommand reads a finished run's results directory (--results, else $REPOTUNE_RESULTS,
else ./results) and acts on the git repository it runs in (or --repo PATH)."""
EXAMPLES = """examples:
  repotune suggest                      # message for the staged change
  repotune hook install                 # pre-fill `git commit` messages from now on
  repotune complete src/app.py:42       # complete code at the start of line 42
  repotune inspect                      # what the model is trained on and asked
  repotune serve                        # keep the model loaded: fast answers, editor plugins
  repotune suggest --help               # more on one subcommand
"""


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--results", metavar="DIR", help="finished run (default: $REPOTUNE_RESULTS or ./results)"
    )
    common.add_argument("--model", help="which model of the run (needed when it has several)")
    common.add_argument("--repo", default=".", metavar="PATH", help="git repository (default: .)")
    common.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs"
    )
    return common


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="repotune",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_options()
    suggest.add_parser(commands, common)
    hook.add_parser(commands, common)
    complete.add_parser(commands, common)
    inspect.add_parser(commands, common)
    serve.add_parser(commands, common)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; 0 on success, 1 with one line on stderr on bad input."""
    args = parser().parse_args(argv)
    # The libraries' warnings and progress bars are for developers; a user (and a commit hook)
    # sees our one-line errors only.
    logging.basicConfig(level=logging.ERROR, format="repotune: %(name)s: %(message)s")
    warnings.filterwarnings("ignore")
    try:
        return int(args.handler(args))
    except InputError as error:
        print(f"repotune: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> NoReturn:
    """The ``repotune`` command as a process: :func:`main`, then
    :func:`repotune.logs.exit_now` (subcommands close what they write before they return)."""
    exit_now(main())
