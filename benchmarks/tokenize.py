"""Benchmark of the tokenize stage against the tokenizer alone and against naive padding.

On the same curated splits (a directory of results/dataset/*.parquet, or synthetic realistic
commits when none is given) it times:

(a) the tokenizer's own batch encode of every commit the stage reads (train, validation and
    test), each rendered whole, in one ``encode_batch_fast`` call on the same threads: the
    upper bound on speed (ids stay on the Rust side, nothing is packed or written),
(b) our whole stage: read, render, encode, split long commits, pack, write the shards of all
    three splits (with the tokenizer given, and as configured: for train-bpe that includes
    training it),
(c) the naive way, on the training split: one example per commit, padded to seq_len, longer
    ones truncated.

and prints tokens/s, padding waste and the ratios, in wall time and in CPU time (the process's
CPU seconds, all threads). (a) and (b) run back to back, ``--repeats`` times: the ratio of the
best times, and the median of the pairs' ratios (on a shared machine the load moves between
runs; a pair shares most of it). Goals: (b) >= 0.7x (a) on the same input; (b)'s training
split wastes <= 1% of its token slots on padding (vs (c)'s).
Run: .venv/bin/python -m benchmarks.tokenize [--help]
"""

import sys
from pathlib import Path

# This file's name shadows the standard library's tokenize module (which inspect imports):
# take its directory off the import path before anything else is imported.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from datasets.utils.logging import disable_progress_bar  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from repotune.config import resolve_config  # noqa: E402
from repotune.curate.table import SPLITS  # noqa: E402
from repotune.models import resolve_model  # noqa: E402
from repotune.shards.render import get_template, render, task_for  # noqa: E402
from repotune.shards.stage import TokenizeSettings, read_curated, tokenize_stage  # noqa: E402
from repotune.shards.tokenizer import configure_parallelism  # noqa: E402
from testdata.curated import synthetic_rows, write_curated  # noqa: E402


def _timed(job, repeats: int = 1):
    """The job's result, its best wall time and its best CPU time (all threads) over
    ``repeats`` runs (the machine is shared)."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        started, used = time.perf_counter(), time.process_time()
        result = job()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - used)
    return result, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="directory of {train,validation,test}.parquet")
    parser.add_argument(
        "--commits", type=int, default=4000, help="synthetic commits (no --dataset)"
    )
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="runs of (a) and (b), back to back")
    parser.add_argument("--model", default="tiny", help="models: entry (preset, hub id or path)")
    args = parser.parse_args()
    configure_parallelism(args.threads)
    disable_progress_bar()
    tokenize = resolve_config({"tokenize": {"seq_len": args.seq_len}})["tokenize"]
    settings = TokenizeSettings.from_config(tokenize)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.dataset is None:
            rows = synthetic_rows(args.commits, seed=0, split="train")
            rows += synthetic_rows(2, 1, "validation") + synthetic_rows(2, 2, "test")
            dataset = {split: p for split, p in write_curated(work / "dataset", rows).items()}
        else:
            dataset = {split: args.dataset / f"{split}.parquet" for split in SPLITS}
        spec = resolve_model(args.model)

        def stage(model, out: Path) -> dict:
            shard_dirs = {split: out / split for split in SPLITS}
            return tokenize_stage(
                dataset, out / "tokenizer", shard_dirs, out / "stats.json", settings, model, threads
            )

        threads = args.threads
        # (b) the stage twice: as configured (train-bpe trains first), then with that tokenizer
        # given, like a hub tokenizer, which is what compares with (a).
        first, first_seconds, _ = _timed(lambda: stage(spec, work / "first"))
        out = work / "first"
        given = resolve_model(
            {"name": "given", "base": str(out / "tokenizer"), "template": spec.template}
        )
        tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
        backend = tokenizer.backend_tokenizer
        template = get_template(first["template"]["name"])

        def rendered(split: str) -> list[str]:
            rows = [row for rows in read_curated(dataset[split], 4096) for row in rows]
            return [render(row, task_for(row["sha"], 0.5, 0), template) for row in rows]

        texts = rendered("train")
        every = texts + [text for split in SPLITS if split != "train" for text in rendered(split)]
        raw_times, stage_times = [], []
        for run in range(args.repeats):
            # (a) the tokenizer alone: batch encode of the already rendered texts, all splits.
            everything, *times = _timed(
                lambda: backend.encode_batch_fast(every, add_special_tokens=False)
            )
            raw_times.append(times)
            # (b) a fresh directory each run, as Snakemake gives the stage.
            stats, *times = _timed(lambda out=work / f"given{run}": stage(given, out))
            stage_times.append(times)
        (raw_seconds, raw_cpu), (stage_seconds, stage_cpu) = (
            np.min(raw_times, axis=0),
            np.min(stage_times, axis=0),
        )
        paired_wall, paired_cpu = np.median(np.divide(raw_times, stage_times), axis=0)
        raw_tokens = sum(len(e) for e in everything) + len(everything)  # + one EOS each
        encoded = everything[: len(texts)]

        # (c) naive: encode, one row per commit, pad/truncate to seq_len.
        def naive() -> np.ndarray:
            rows = backend.encode_batch_fast(texts, add_special_tokens=False)
            batch = np.full((len(rows), args.seq_len), tokenizer.pad_token_id, dtype=np.int32)
            for i, encoding in enumerate(rows):
                ids = [*encoding.ids[: args.seq_len - 1], tokenizer.eos_token_id]
                batch[i, : len(ids)] = ids
            return batch

        naive_batch, naive_seconds, _ = _timed(naive, args.repeats)
        naive_real = sum(min(len(e) + 1, args.seq_len) for e in encoded)
        naive_waste = 1 - naive_real / naive_batch.size
        truncated = sum(len(e) + 1 > args.seq_len for e in encoded)

    train = stats["splits"]["train"]
    stage_tokens = stats["tokens"]
    ours = stage_tokens / stage_seconds
    raw = raw_tokens / raw_seconds
    print(
        f"data: {len(texts)} training commits ({len(every)} in all splits), "
        f"seq_len {args.seq_len}, threads {args.threads}"
    )
    print(f"tokenizer: {stats['tokenizer']['source']} vocab {stats['tokenizer']['vocab_size']}")
    print(
        f"(a) raw batch encode : {raw_tokens:>10} tokens {raw_seconds:7.2f} s {raw:>12,.0f} tok/s"
        f"  (all splits; CPU {raw_cpu:.2f} s)"
    )
    print(
        f"(b) tokenize stage   : {stage_tokens:>10} tokens {stage_seconds:7.2f} s "
        f"{ours:>12,.0f} tok/s  (all splits, tokenizer given; CPU {stage_cpu:.2f} s)"
    )
    print(
        f"    with {spec.tokenizer:<9}: {first['tokens']:>10} tokens {first_seconds:7.2f} s "
        f"{first['tokens'] / first_seconds:>12,.0f} tok/s  (tokenizer as configured)"
    )
    print(f"(c) naive pad/trunc  : {naive_real:>10} tokens {naive_seconds:7.2f} s")
    print(f"ours / raw throughput: {ours / raw:.2f}x (tokens written, continuation contexts in)")
    print(
        f"ours / raw on the same input: {raw_seconds / stage_seconds:.2f}x wall (goal >= 0.7x), "
        f"{raw_cpu / stage_cpu:.2f}x CPU (best times); median of {args.repeats} back-to-back "
        f"pairs {paired_wall:.2f}x wall, {paired_cpu:.2f}x CPU"
    )
    print(
        f"ours writes {stage_tokens - raw_tokens:+} tokens: continuation contexts in, "
        "changes cut to fit out"
    )
    print(
        f"padding waste: ours {1 - train['packing_efficiency']:.2%} in {train['blocks']} blocks "
        f"(goal <= 1%); naive {naive_waste:.2%} in {naive_batch.shape[0]} rows, "
        f"{truncated} commits truncated"
    )
    print(f"commits split: {train['commits_split']}, documents: {train['documents']}")


if __name__ == "__main__":
    main()
