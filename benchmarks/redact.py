"""Benchmark secret redaction: throughput, coverage and false positives, against a baseline.

Baseline: the redactor as it was before issue 11 (``git show BASELINE:repotune/curate/redact.py``,
a handful of regular expressions run over the whole text), on the same inputs in one run.

(a) throughput on real Python source formatted as added patch lines (the installed
    site-packages), in MB/s, and the ratio project / baseline;
(b) coverage on tests/secret_corpus.py (generated, never real secrets): formats of which every
    variant is redacted, out of the formats tried, and samples caught;
(c) findings per MB on real source code (site-packages as files, not patches): nearly all of
    them are false positives (packages ship test keys and doc examples too), so the count per
    kind and a few examples are printed for a person to judge.

    .venv/bin/python -m benchmarks.redact              # ~8 MB of patches, ~30 MB of source
    .venv/bin/python -m benchmarks.redact --mb 2       # quicker
"""

import argparse
import glob
import subprocess
import sys
import sysconfig
import time
import types
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repotune.curate.redact import Redactor, RedactSettings  # noqa: E402
from tests.secret_corpus import corpus, formats  # noqa: E402

BASELINE = "01cd77c"  # the last commit before issue 11 changed redaction
SETTINGS = RedactSettings(emails=True, entropy_threshold=3.0, min_secret_length=8)


def baseline_redactor() -> Redactor:
    """The redactor at ``BASELINE``, loaded from git into a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:repotune/curate/redact.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("baseline_redact")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BASELINE}:redact.py", "exec"), module.__dict__)
    return module.Redactor(module.RedactSettings(**vars(SETTINGS)))


def source_files(megabytes: float) -> list[str]:
    """Real Python source from site-packages, sorted by path, up to ``megabytes``."""
    paths = sorted(glob.glob(f"{sysconfig.get_paths()['purelib']}/**/*.py", recursive=True))
    texts: list[str] = []
    size = 0
    for path in paths:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        size += len(text.encode())
        if size >= megabytes * 1e6:
            break
    return texts


def as_patches(texts: list[str], lines_per_hunk: int = 60) -> list[str]:
    lines = [line for text in texts for line in text.splitlines()]
    return [
        "@@ -1 +1 @@\n" + "".join(f"+{line}\n" for line in lines[i : i + lines_per_hunk])
        for i in range(0, len(lines), lines_per_hunk)
    ]


def throughput(redactor: Redactor, patches: list[str], repeats: int = 3) -> float:
    megabytes = sum(len(p.encode()) for p in patches) / 1e6
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for patch in patches:
            redactor.redact(patch)
        best = min(best, time.perf_counter() - started)
    return megabytes / best


def coverage(redactor: Redactor) -> tuple[int, int, int, int]:
    """(formats fully caught, formats, samples caught, samples)."""
    samples = corpus(seed=1)
    missed: set[str] = set()
    caught = 0
    for sample in samples:
        out = redactor.redact(sample.text)
        if sample.secret in out or (sample.kept and sample.kept not in out):
            missed.add(sample.format)
        else:
            caught += 1
    names = formats(samples)
    return len(names) - len(missed), len(names), caught, len(samples)


def findings(make: type, texts: list[str]) -> tuple[Counter, dict[str, list[str]]]:
    """Redactions per kind on ``texts``, with up to 3 redacted lines per kind as examples."""
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for text in texts:
        redactor = make()
        for line in text.splitlines():
            before = dict(redactor.counts)
            out = redactor.redact(line)
            for kind, count in redactor.counts.items():
                if count > before.get(kind, 0):
                    counts[kind] += count - before.get(kind, 0)
                    if len(examples[kind]) < 3:
                        examples[kind].append(out.strip()[:110])
    return counts, examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=8.0, help="MB of patches for throughput")
    parser.add_argument("--fp-mb", type=float, default=30.0, help="MB of source for findings")
    args = parser.parse_args()
    ours, theirs = Redactor(SETTINGS), baseline_redactor()

    patches = as_patches(source_files(args.mb))
    megabytes = sum(len(p.encode()) for p in patches) / 1e6
    base_speed, our_speed = throughput(theirs, patches), throughput(ours, patches)
    print(f"(a) throughput on {megabytes:.1f} MB of patches ({len(patches)} hunks)")
    print(f"    baseline {BASELINE}: {base_speed:.1f} MB/s")
    print(f"    project:          {our_speed:.1f} MB/s  (ratio {our_speed / base_speed:.2f})")

    for label, redactor in ((f"baseline {BASELINE}", baseline_redactor()), ("project", ours)):
        full, total, caught, samples = coverage(redactor)
        print(f"(b) coverage, {label}: {full}/{total} formats, {caught}/{samples} samples")

    texts = source_files(args.fp_mb)
    source_mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"(c) findings on {source_mb:.1f} MB of site-packages source ({len(texts)} files)")
    for label, make in (
        (f"baseline {BASELINE}", baseline_redactor),
        ("project", lambda: Redactor(SETTINGS)),
    ):
        counts, examples = findings(make, texts)
        total = sum(counts.values())
        print(f"    {label}: {total} findings, {total / source_mb:.1f} per MB: {dict(counts)}")
        if label == "project":
            for kind, lines in sorted(examples.items()):
                for line in lines:
                    print(f"      {kind}: {line}")


if __name__ == "__main__":
    main()
