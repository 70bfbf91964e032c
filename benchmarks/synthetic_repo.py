"""A large, deterministic git history for benchmarks, built in seconds with git fast-import.

Each commit edits one to three Python-like files of a few hundred (seeded, random) files: a
few lines changed, inserted or deleted, now and then a new file or a rename, so ``git log -p``
does realistic diffing work. No network, no weights: only git.

``max_lines`` keeps every file at most that long (an insert becomes a delete there), so the
history is in a steady state: commit one million costs git and us what commit one thousand
did, and a scale benchmark measures the history's length, not its files growing. ``marks``
adds a branch ``at-N`` at each listed commit count, so one build serves several sizes.
"""

import argparse
import random
import subprocess
from pathlib import Path

WORDS = [
    "value",
    "result",
    "index",
    "item",
    "total",
    "count",
    "name",
    "path",
    "data",
    "node",
    "cache",
    "state",
    "error",
]


def _line(rng: random.Random) -> str:
    a, b, c = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
    return f"    {a}_{b} = {c}({rng.randrange(1000)}, {b!r})\n"


def _file(rng: random.Random, lines: int) -> list[str]:
    return [f"def f{rng.randrange(10**6)}():\n"] + [_line(rng) for _ in range(lines)]


def build(
    path: Path,
    commits: int,
    files: int = 400,
    seed: int = 0,
    max_lines: int | None = None,
    marks: tuple[int, ...] = (),
) -> Path:
    """Create (or replace) a repository at ``path`` with ``commits`` commits on main."""
    rng = random.Random(seed)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    contents = {f"pkg/mod{i:04d}.py": _file(rng, rng.randrange(20, 80)) for i in range(files)}
    line = _line
    if max_lines is not None:  # steady mode: lines drawn from a pool, 2-3x faster to generate
        pool = [_line(rng) for _ in range(4096)]

        def line(rng: random.Random) -> str:
            return pool[rng.getrandbits(12)]

    # Loose objects uncompressed: zlib is most of fast-import's time on large histories.
    compression = ["-c", "core.compression=0"] if max_lines is not None else []
    process = subprocess.Popen(
        ["git", "-C", str(path), *compression, "fast-import", "--quiet", "--force"],
        stdin=subprocess.PIPE,
    )
    assert process.stdin is not None
    write = process.stdin.write
    when = 1_500_000_000
    for number in range(commits):
        when += rng.randrange(60, 7200)
        message = f"Change {rng.choice(WORDS)} handling in {number}\n\nDetails {number}.\n".encode()
        write(f"commit refs/heads/main\nmark :{number + 1}\n".encode())
        write(f"author Dev{number % 17} <dev{number % 17}@example.org> {when} +0000\n".encode())
        write(f"committer Dev <dev@example.org> {when} +0000\n".encode())
        write(f"data {len(message)}\n".encode() + message)
        if number:
            write(f"from :{number}\n".encode())
        names = list(contents) if number == 0 else rng.sample(sorted(contents), rng.randint(1, 3))
        if number and rng.random() < 0.02:
            old = names.pop()
            new = f"pkg/renamed{number}.py"
            contents[new] = contents.pop(old)
            write(f"R {old} {new}\n".encode())
        for name in names:
            lines = contents[name]
            for _ in range(rng.randint(1, 6)):
                at = rng.randrange(1, len(lines))
                kind = rng.random()
                full = max_lines is not None and len(lines) >= max_lines
                if kind < 0.4:
                    lines[at] = line(rng)
                elif (kind < 0.8 or len(lines) < 10) and not full:
                    lines.insert(at, line(rng))
                else:
                    del lines[at]
            blob = "".join(lines).encode()
            write(f"M 100644 inline {name}\ndata {len(blob)}\n".encode() + blob + b"\n")
        if number + 1 in marks:
            write(f"reset refs/heads/at-{number + 1}\nfrom :{number + 1}\n\n".encode())
    process.stdin.close()
    if process.wait():
        raise RuntimeError("git fast-import failed")
    subprocess.run(["git", "-C", str(path), "reset", "-q", "--hard", "main"], check=True)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--commits", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-lines", type=int, default=None)
    arguments = parser.parse_args()
    build(arguments.path, arguments.commits, seed=arguments.seed, max_lines=arguments.max_lines)
