"""Benchmark of packing on a real-sized history: whole documents (ours) vs a cut stream.

A synthetic git history (benchmarks/synthetic_repo.py, 50,000 commits by default) goes
through the real extract and curate stages; its training split is rendered and encoded as
the tokenize stage does (repotune.shards.stage.encode_split, with the tiny preset's trained
BPE) and packed into blocks of ``seq_len`` two ways:

(a) the baseline, the layout before issue 15: every document followed by EOS, the stream cut
    into blocks wherever a block ends (documents straddle blocks; efficiency is the ceiling);
(b) ours (repotune.shards.stage.place_documents + packing.layout): EOS only after a commit's
    last document, whole commits packed by best-fit decreasing, long commits split into the
    room left (each continuation behind its task and file header), no document cut.

The baseline packs the same documents as ours (continuation contexts included). It prints
both packing efficiencies (goal for ours: >= 99% on the training split), how many documents
the baseline cuts, the EOS tokens each puts inside a commit, and the time of each.

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
from repotune.shards.packing import layout  # noqa: E402
from repotune.shards.prompt import line_ends  # noqa: E402
from repotune.shards.stage import (  # noqa: E402
    TokenizeSettings,
    encode_split,
    place_documents,
    prepare_tokenizer,
)
from repotune.shards.tokenizer import TextEncoder, configure_parallelism  # noqa: E402


def _timed(job):
    started = time.perf_counter()
    result = job()
    return result, time.perf_counter() - started


def stream_packing(lengths: np.ndarray, seq_len: int) -> tuple[float, int, int]:
    """The baseline: efficiency, documents cut by a block end, blocks (EOS after each)."""
    with_eos = lengths + 1
    ends = np.cumsum(with_eos)
    starts = ends - with_eos
    total = int(ends[-1])
    blocks = -(-total // seq_len)
    cut = int(np.count_nonzero(starts // seq_len != (ends - 1) // seq_len))
    return total / (blocks * seq_len), cut, blocks


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
        tokenize = TokenizeSettings(seq_len=args.seq_len)
        spec = resolve_model("tiny")
        (tokenizer, template), bpe_seconds = _timed(
            lambda: prepare_tokenizer(spec, outputs["train"], tokenize)
        )
        split, encode_seconds = _timed(
            lambda: encode_split(outputs["train"], tokenizer, template, tokenize)
        )
    commits = len(split.shas)
    ends_line = line_ends(TextEncoder(tokenizer, template.markers), len(tokenizer))
    block, place_seconds = _timed(lambda: place_documents(split, args.seq_len, ends_line))
    lengths = np.asarray(split.lengths, dtype=np.int64)
    ends = np.asarray(split.ends, dtype=bool)
    print(
        f"history: {args.commits} commits built in {build_seconds:.1f} s, extracted in "
        f"{extract_seconds:.1f} s, curated in {curate_seconds:.1f} s; BPE trained in "
        f"{bpe_seconds:.1f} s; training split encoded in {encode_seconds:.1f} s"
    )
    print(
        f"training split: {commits} commits, {len(lengths)} documents "
        f"({split.commits_split} commits longer than a block), {int(lengths.sum())} tokens, "
        f"seq_len {args.seq_len}"
    )
    (efficiency, cut, blocks), stream_seconds = _timed(
        lambda: stream_packing(lengths, args.seq_len)
    )
    print(
        f"(a) baseline, cut stream: efficiency {efficiency:.4%}, {blocks} blocks, "
        f"{cut} documents cut by a block end, {len(lengths) - commits} EOS inside commits, "
        f"{stream_seconds:.2f} s"
    )
    order = np.asarray(split.document_commit)
    ours, layout_seconds = _timed(
        lambda: layout(split.tokens(), lengths, ends, block, args.seq_len, 0, 1, order)
    )
    print(
        f"(b) ours, whole documents: efficiency {ours.efficiency:.4%} (goal >= 99%), "
        f"{len(ours.length)} blocks, 0 documents cut, 0 EOS inside commits, "
        f"{place_seconds + layout_seconds:.2f} s (splitting long commits included)"
    )
    print(f"blocks ours / baseline: {len(ours.length) / blocks:.4f}x")


if __name__ == "__main__":
    main()
