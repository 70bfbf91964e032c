"""``repotune inspect``: print what a run's model is trained on and asked.

The tokenize stage writes ``results/{model}/shards/preview.md`` (repotune.shards.preview):
decoded documents of each kind from the train shards and the evaluation's first prompts,
special tokens shown as ``«token»``. Reading it needs no model, so it works as soon as tokenize
has run, before training.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from repotune.cli.run import results_dir
from repotune.errors import InputError

HELP = "show what the model is trained on and asked (decoded documents and prompts)"
EXAMPLES = """examples:
  repotune inspect                      # the run's only model
  repotune inspect --model tiny | less
"""
PREVIEW = Path("shards") / "preview.md"


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "inspect",
        parents=[common],
        help=HELP,
        description=HELP + ".",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=run)


def preview_path(results: Path, model: str | None) -> Path:
    """The preview of ``model`` (the only one with a preview when None); one-line errors."""
    where = f"results directory '{results}'"
    if not results.is_dir():
        raise InputError(where, "does not exist", "run the workflow first (`make run`)")
    names = sorted(p.name for p in results.iterdir() if (p / PREVIEW).is_file())
    if model is None:
        if not names:
            raise InputError(where, "holds no tokenized model", "run the workflow first")
        if len(names) > 1:
            raise InputError(where, f"holds several models ({', '.join(names)})", "choose --model")
        model = names[0]
    if model not in names:
        found = f" (found: {', '.join(names)})" if names else ""
        raise InputError(
            f"model '{model}'", f"has no {PREVIEW} in '{results}'{found}", "run its tokenize stage"
        )
    return results / model / PREVIEW


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(preview_path(results_dir(args.results), args.model).read_text("utf-8"))
    return 0
