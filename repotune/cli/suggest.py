"""``repotune suggest``: commit-message candidates for the staged change (or a diff on stdin).

When ``repotune serve`` runs for the model, it answers, through these same functions
(:mod:`repotune.serve.engine`); else the model is loaded here. The change is prompted exactly
as the model was trained to answer it, and as evaluation asks
its commit-message questions: the diff as file records (repotune.cli.diff) with the run's
curate filters applied, made a prompt by
:func:`repotune.inference.prompts.commit_message_prompt` within the budget of
:func:`repotune.inference.budget.budget` (the training block, the model's context), and
decoded by :func:`repotune.inference.decoding.continuations`: the first candidate is
evaluation's greedy generation for the same change.
"""

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from repotune.cli.diff import filtered_files, parse_diff, staged_files
from repotune.cli.run import (
    EMPTY_EXIT,
    FinishedRun,
    LoadedModel,
    empty_answer,
    find_run,
    load,
    results_dir,
)
from repotune.errors import InputError

if TYPE_CHECKING:  # torch: imported when a model runs, not for `repotune --help`
    from repotune.inference.decoding import Decoding
    from repotune.inference.prompts import Prompt

HELP = "suggest commit messages for the staged change (or a diff on stdin)"
EXAMPLES = f"""examples:
  git add -p && repotune suggest
  repotune suggest -n 3 --seed 7
  git diff HEAD~1 | repotune suggest --stdin

exit status: 0 a message printed, 1 bad input (one line on stderr), {EMPTY_EXIT} the model's
answer was empty (one line on stderr, nothing on stdout)
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
    parser.add_argument(
        "--no-server", action="store_true", help="load the model here even if `repotune serve` runs"
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


def message_prompt(
    loaded: LoadedModel, commit: dict[str, Any], max_new_tokens: int
) -> tuple["Prompt", int]:
    """The commit-message prompt of ``commit`` within the run's budget, and how many new
    tokens the message may take."""
    from repotune.inference.budget import budget, context_length
    from repotune.inference.prompts import commit_message_prompt, prompt_encoder

    record, tokenizer = loaded.record, loaded.tokenizer
    limits = budget(record, max_new_tokens, context_length(loaded.model))
    encoder = prompt_encoder(tokenizer, record)
    prompt = commit_message_prompt(commit, record, encoder, limits.prompt_tokens)
    return prompt, limits.new_tokens


def suggestions(loaded: LoadedModel, commit: dict[str, Any], decoding: "Decoding") -> list[str]:
    """Message candidates for ``commit`` (greedy first), each stripped of surrounding space;
    empty answers left out."""
    from repotune.inference.decoding import continuations

    prompt, new_tokens = message_prompt(loaded, commit, decoding.max_new_tokens)
    bounded = replace(decoding, max_new_tokens=new_tokens)
    texts = continuations(loaded.model, loaded.tokenizer, prompt, bounded)
    return [text for text in dict.fromkeys(text.strip() for text in texts) if text]


def served_suggestions(
    run: FinishedRun, commit: dict[str, Any], args: argparse.Namespace
) -> list[str] | None:
    """The running server's candidates for ``commit`` (the same function answers there), None
    when no server of the model runs or it could not answer."""
    from repotune.serve import client

    options = {
        "n": args.candidates,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    return client.ask_running(
        run.results,
        run.model,
        lambda server: client.commit_messages(server, commit["files"], options, client.CLI_TIMEOUT),
    )


def run(args: argparse.Namespace) -> int:
    if args.candidates < 1 or args.max_tokens < 1:
        raise InputError("--candidates/--max-tokens", "must be at least 1", "give a positive count")
    finished = find_run(results_dir(args.results), args.model)
    if args.stdin:
        files, where = parse_diff(sys.stdin.read()), "the diff on standard input"
    else:
        files, where = staged_files(args.repo), f"the staged change of '{args.repo}'"
    commit = change_commit(files, finished, where)
    found = None if args.no_server else served_suggestions(finished, commit, args)
    if found is None:
        from repotune.inference.decoding import Decoding  # torch, once the input is known good

        decoding = Decoding(
            candidates=args.candidates,
            max_new_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
        found = suggestions(load(finished, args.device), commit, decoding)
    if not found:
        return empty_answer("commit message")
    if len(found) == 1:
        print(found[0])
    else:
        for number, text in enumerate(found, 1):
            print(f"--- candidate {number}\n{text}")
    return 0
