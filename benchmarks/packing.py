"""Benchmark of packing on a real-sized history: windowed whole documents (ours) vs a cut stream.

A synthetic git history (benchmarks/synthetic_repo.py, 50,000 commits by default) goes
through the real extract and curate stages; its training split is rendered and encoded as
the tokenize stage does (repotune.shards.stage.encode_split, with the tiny preset's trained
BPE) and packed into blocks of ``seq_len`` three ways:

(a) the baseline, the layout before issue 15: every commit followed by EOS, the stream cut
    into blocks wherever a block ends (commits straddle blocks; efficiency is the ceiling);
(b) ours, as the stage packs (repotune.shards.stream.StreamPacker): windows of
    WINDOW_COMMITS commits, each packed on its own: EOS only after a commit's last document,
    whole commits by best-fit decreasing, long commits split into the room left (each
    continuation behind its task and file header), no document cut;
(c) the same packing over the whole split as one window (what (b) gives up for flat memory).

It prints the packing efficiencies (goal for ours: >= 99% on the training split), the blocks
of each, and the time of each.

    .venv/bin/python -m benchmarks.packing                       # 50,000 commits, seq_len 1024
    .venv/bin/python -m benchmarks.packing --commits 10000 --seq-len 512
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic_repo import build  # noqa: E402
from repotune.config import resolve_config  # noqa: E402
from repotune.curate.stage import CurateSettings, curate  # noqa: E402
from repotune.extract.stage import ExtractSettings, extract_to_parquet  # noqa: E402
from repotune.models import resolve_model  # noqa: E402
from repotune.shards.stage import (  # noqa: E402
    EncodeCounts,
    TokenizeSettings,
    encode_split,
    prepare_tokenizer,
)
from repotune.shards.stream import WINDOW_COMMITS, StreamPacker  # noqa: E402
from repotune.shards.tokenizer import TextEncoder, configure_parallelism  # noqa: E402


def _timed(job):
    started = time.perf_counter()
    result = job()
    return result, time.perf_counter() - started


def stream_packing(lengths: np.ndarray, seq_len: int) -> tuple[float, int, int]:
    """The baseline: efficiency, commits cut by a block end, blocks (EOS after each)."""
    with_eos = lengths + 1
    ends = np.cumsum(with_eos)
    starts = ends - with_eos
    total = int(ends[-1])
    blocks = -(-total // seq_len)
    cut = int(np.count_nonzero(starts // seq_len != (ends - 1) // seq_len))
    return total / (blocks * seq_len), cut, blocks


def packed(batches, seq_len: int, ends_line: np.ndarray, window: int) -> dict:
    """Pack the batches as the stage does, ``window`` commits at a time; the packer's stats."""
    packer = StreamPacker(seq_len, 0, 1, ends_line, window_commits=window)
    for batch in batches:
        packer.add(batch)
    packer.finish()
    return packer.stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=50_000)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    configure_parallelism(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        _, build_seconds = _timed(lambda: build(work / "repo", args.commits))
        config = resolve_config({})
        extract = ExtractSettings.from_config(config["extract"])
        head = "refs/heads/main"
        _, extract_seconds = _timed(
            lambda: extract_to_parquet(
                work / "repo",
                head,
                work / "commits.parquet",
                work / "extract.json",
                work / "cache" / "commits.parquet",
                extract,
                args.threads,
            )
        )
        outputs = {name: work / f"{name}.parquet" for name in ("train", "validation", "test")}
        settings = CurateSettings.from_config(config["curate"])
        _, curate_seconds = _timed(
            lambda: curate(work / "commits.parquet", outputs, work / "curation.json", settings)
        )
        section = {"seq_len": args.seq_len}
        tokenize = TokenizeSettings.from_config(resolve_config({"tokenize": section})["tokenize"])
        spec = resolve_model("tiny")
        (tokenizer, template), bpe_seconds = _timed(
            lambda: prepare_tokenizer(spec, outputs["train"], tokenize)
        )
        batches, encode_seconds = _timed(
            lambda: list(
                encode_split(outputs["train"], tokenizer, template, tokenize, EncodeCounts())
            )
        )
    commits = sum(len(batch.shas) for batch in batches)
    long = [commit for batch in batches for commit in batch.long]
    lengths = np.concatenate(
        [batch.lengths for batch in batches] + [np.array([c.tokens for c in long], np.int64)]
    )
    ends_line = TextEncoder(tokenizer, template.markers).line_ends
    print(
        f"history: {args.commits} commits built in {build_seconds:.1f} s, extracted in "
        f"{extract_seconds:.1f} s, curated in {curate_seconds:.1f} s; BPE trained in "
        f"{bpe_seconds:.1f} s; training split encoded in {encode_seconds:.1f} s"
    )
    print(
        f"training split: {commits} commits ({len(long)} longer than a block), "
        f"{int(lengths.sum())} tokens, seq_len {args.seq_len}"
    )
    (efficiency, cut, blocks), stream_seconds = _timed(
        lambda: stream_packing(lengths, args.seq_len)
    )
    print(
        f"(a) baseline, cut stream: efficiency {efficiency:.4%}, {blocks} blocks, "
        f"{cut} commits cut by a block end, {stream_seconds:.2f} s"
    )
    windowed, windowed_seconds = _timed(
        lambda: packed(batches, args.seq_len, ends_line, WINDOW_COMMITS)
    )
    print(
        f"(b) ours, windows of {WINDOW_COMMITS} commits: efficiency "
        f"{windowed['packing_efficiency']:.4%} (goal >= 99%), {windowed['blocks']} blocks, "
        f"{windowed['packing_windows']} windows, 0 documents cut, 0 EOS inside commits, "
        f"{windowed_seconds:.2f} s (splitting long commits included)"
    )
    whole, whole_seconds = _timed(lambda: packed(batches, args.seq_len, ends_line, commits))
    print(
        f"(c) ours, the whole split as one window: efficiency "
        f"{whole['packing_efficiency']:.4%}, {whole['blocks']} blocks, {whole_seconds:.2f} s"
    )
    print(
        f"blocks ours / baseline: {windowed['blocks'] / blocks:.4f}x; "
        f"windows / one window: {windowed['blocks'] / whole['blocks']:.4f}x"
    )


if __name__ == "__main__":
    main()
