"""``repotune serve``: keep a finished run's model loaded behind a local OpenAI-compatible API.

While it runs, ``repotune suggest``, ``repotune complete`` and the commit hook ask it instead
of loading the model themselves, and editor plugins can use it as an OpenAI provider
(docs/serving.md). The server itself is :mod:`repotune.serve.server`.
"""

import argparse
from typing import Any

from repotune.cli.run import find_run, results_dir
from repotune.errors import InputError
from repotune.serve.state import DEFAULT_IDLE_TIMEOUT, DEFAULT_PORT

HELP = "keep the model loaded and answer on 127.0.0.1 (OpenAI completions API, commit messages)"
EXAMPLES = """examples:
  repotune serve                              # http://127.0.0.1:8231/v1 until 30 min idle
  repotune serve --model tiny --port 0 --idle-timeout 0   # any free port, never stop idle
  curl -s http://127.0.0.1:8231/v1/completions \\
    -H "Authorization: Bearer $(cat ~/.config/repotune/token)" \\
    -H 'Content-Type: application/json' -d '{"prompt": "def add(a, b):\\n", "max_tokens": 32}'

The token is made on the first start in ~/.config/repotune/token (mode 0600; $REPOTUNE_HOME or
$XDG_CONFIG_HOME move it). Stop the server with Ctrl-C or SIGTERM.
"""


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "serve",
        parents=[common],
        help=HELP,
        description=HELP + ".",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help=f"stop after this long without a request (default {DEFAULT_IDLE_TIMEOUT:g}; 0: never)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default 0: one for a model under 100 M parameters, else all)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from repotune.serve.server import ServeSettings, serve

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port}", "is not a port", "give 0 to 65535")
    if args.threads < 0:
        raise InputError(f"--threads {args.threads}", "is negative", "give a count, or 0 for auto")
    if args.idle_timeout < 0:
        raise InputError("--idle-timeout", "must not be negative", "give seconds, or 0 for never")
    finished = find_run(results_dir(args.results), args.model)
    serve(finished, ServeSettings(args.port, args.idle_timeout, args.device, args.threads))
    return 0
