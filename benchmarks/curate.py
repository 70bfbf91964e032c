"""Benchmark stage curate against its floor, and check that its memory stays flat.

(a) the floor: stream the same commits.parquet batch by batch into a new Parquet file with
    pyarrow alone (what any stage that reads and rewrites the table pays);
(b) curate with the default settings: filters, redaction, time split, recency weights.

It also curates the first fifth of the history and all of it, each in a fresh process, and
prints the peak memory of both: it should not grow with history length.

The input is synthetic: commits whose patches are slices of real Python source (from the
installed site-packages), a few with planted secrets, a few lockfile changes and bot commits.

    .venv/bin/python -m benchmarks.curate                  # 20000 commits
    .venv/bin/python -m benchmarks.curate --commits 50000
"""

import argparse
import glob
import json
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repotune.config import resolve_config  # noqa: E402
from repotune.curate.stage import CurateSettings, curate  # noqa: E402
from repotune.curate.table import SPLITS  # noqa: E402
from testdata.commits import History, change, write_commits  # noqa: E402

MEMORY_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from repotune.config import resolve_config  # noqa: E402
from repotune.curate.stage import CurateSettings, curate  # noqa: E402
from repotune.curate.table import SPLITS  # noqa: E402
out = sys.argv[3]
outputs = {name: f"{out}/{name}.parquet" for name in SPLITS}
curate(sys.argv[2], outputs, out + "/curation.json",
       CurateSettings.from_config(resolve_config()["curate"]))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent.
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(json.dumps(int(status.split()[0]) // 1024))
"""


def synthetic_history(commits: int) -> list[dict]:
    """``commits`` rows with 1-3 files each, patches cut from real source files."""
    sources = sorted(glob.glob(f"{sysconfig.get_paths()['purelib']}/**/*.py", recursive=True))
    lines = [
        line
        for path in sources[:2000]
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    ]
    history = History()
    cursor = 0
    for number in range(commits):
        files = []
        for index in range(1 + number % 3):
            size = 20 + (number * 7 + index * 13) % 120
            hunk = "".join(f"+{line}\n" for line in lines[cursor : cursor + size])
            cursor = (cursor + size) % max(1, len(lines) - 200)
            if number % 97 == 0:
                hunk += '+AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n'
            files.append(change(f"src/module_{number % 500}_{index}.py", f"@@ -1 +1 @@\n{hunk}"))
        if number % 50 == 0:
            files.append(change("package-lock.json", '@@ -1 +1 @@\n+"lodash": "4.17.21"\n'))
        author = "dependabot[bot]" if number % 200 == 0 else "Ada Lovelace"
        history.add(
            f"Improve module {number % 500}, step {number}",
            "Signed-off-by: Ada <ada@example.org>",
            files=files,
            author=author,
            day=number / 10,
        )
    return history.rows


def floor(source: Path, target: Path) -> None:
    parquet = pq.ParquetFile(source)
    with pq.ParquetWriter(target, parquet.schema_arrow) as writer:
        for batch in parquet.iter_batches(batch_size=1000):
            writer.write_batch(batch)


def peak_mb(source: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(ROOT), str(source), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        rows = synthetic_history(args.commits)
        source = write_commits(work / "commits.parquet", rows, row_group=2000)
        fifth = write_commits(work / "fifth.parquet", rows[: len(rows) // 5], row_group=2000)
        patch_mb = sum(f["patch_bytes"] for row in rows for f in row["files"]) / 1e6
        del rows

        started = time.perf_counter()
        floor(source, work / "copy.parquet")
        floor_s = time.perf_counter() - started

        out = work / "dataset"
        outputs = {name: out / f"{name}.parquet" for name in SPLITS}
        settings = CurateSettings.from_config(resolve_config()["curate"])
        started = time.perf_counter()
        report = curate(source, outputs, out / "curation.json", settings)
        curate_s = time.perf_counter() - started

        print(f"input: {args.commits} commits, {patch_mb:.1f} MB of patches")
        print(f"(a) floor, pyarrow read+write: {floor_s:.2f} s")
        print(
            f"(b) curate: {curate_s:.2f} s, {args.commits / curate_s:.0f} commits/s, "
            f"{patch_mb / curate_s:.1f} MB/s; kept {report['kept_commits']}, "
            f"redactions {sum(report['redactions'].values())}"
        )
        print(
            f"peak RSS: first fifth {peak_mb(fifth, work / 'm1')} MB, "
            f"all {peak_mb(source, work / 'm2')} MB"
        )


if __name__ == "__main__":
    main()
