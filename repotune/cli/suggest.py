"""``repotune suggest``: commit-message candidates for the staged change (or a diff on stdin).

The change is prompted exactly as the model was trained to answer it: the diff as file
records (repotune.cli.diff) with the run's curate filters applied, rendered in the
``change_to_message`` direction by the one prompt-ids function
(:func:`repotune.shards.prompt.prompt_ids`), cut to the prompt budget the way evaluation cuts
it (:func:`repotune.evaluate.generation.budgets`: the training block length, less the new
tokens, keeping the prompt's end).
"""

import argparse
import sys
from dataclasses import replace
from typing import Any

from repotune.cli.decode import Decoding, continuations
from repotune.cli.diff import filtered_files, parse_diff, staged_files
from repotune.cli.run import FinishedRun, LoadedModel, find_run, load, results_dir
from repotune.errors import InputError

HELP = "suggest commit messages for the staged change (or a diff on stdin)"
EXAMPLES = """examples:
  git add -p && repotune suggest
  repotune suggest -n 3 --seed 7
  git diff HEAD~1 | repotune suggest --stdin
"""


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "suggest",
        parents=[common],
        help=HELP,
        description=HELP + ".",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stdin", action="store_true", help="read the diff from standard input")
    parser.add_argument("-n", "--candidates", type=int, default=1, help="how many (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled candidates")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest message in tokens")
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature of candidates 2..n"
    )
    parser.set_defaults(handler=run)


def change_commit(files: list[dict[str, Any]], run: FinishedRun, where: str) -> dict[str, Any]:
    """The change as a commit without a message, after the run's curate file filters."""
    if not files:
        raise InputError(where, "has no changes", "stage some with `git add`, or pipe a diff")
    kept, dropped = filtered_files(files, run.curate_settings())
    if not kept:
        raise InputError(
            where,
            f"changes only files the curate filters leave out ({', '.join(dropped)})",
            "stage a source change, or relax curate.filters",
        )
    return {"sha": "", "subject": "", "body": "", "files": kept}


def suggestions(loaded: LoadedModel, commit: dict[str, Any], decoding: Decoding) -> list[str]:
    """Message candidates for ``commit`` (greedy first), each stripped of surrounding space."""
    from repotune.evaluate.generation import GenerationSettings, budgets, context_length
    from repotune.shards.prompt import prompt_ids
    from repotune.shards.render import CHANGE_TO_MESSAGE
    from repotune.shards.tokenizer import TextEncoder

    template = loaded.template
    wanted = GenerationSettings(
        max_new_tokens=decoding.max_new_tokens, max_prompt_tokens=loaded.seq_len - 1
    )
    max_prompt, max_new = budgets(wanted, context_length(loaded.model))
    encoder = TextEncoder(loaded.tokenizer, template.markers)
    ids = prompt_ids(commit, CHANGE_TO_MESSAGE, template, encoder, max_tokens=max_prompt)
    bounded = replace(decoding, max_new_tokens=max_new)
    texts = continuations(loaded.model, loaded.tokenizer, ids, template.markers, bounded)
    return [text.strip() for text in texts]


def run(args: argparse.Namespace) -> int:
    if args.candidates < 1 or args.max_tokens < 1:
        raise InputError("--candidates/--max-tokens", "must be at least 1", "give a positive count")
    finished = find_run(results_dir(args.results), args.model)
    if args.stdin:
        files, where = parse_diff(sys.stdin.read()), "the diff on standard input"
    else:
        files, where = staged_files(args.repo), f"the staged change of '{args.repo}'"
    commit = change_commit(files, finished, where)
    decoding = Decoding(
        candidates=args.candidates,
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    found = suggestions(load(finished, args.device), commit, decoding)
    if len(found) == 1:
        print(found[0])
    else:
        for number, text in enumerate(found, 1):
            print(f"--- candidate {number}\n{text}")
    return 0
