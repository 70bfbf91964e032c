"""Curated-split fixtures for the tokenize stage, built with pyarrow directly.

The curated Parquet has the schema repotune.curate.table.DATASET: results/commits.parquet's
columns plus ``recency_weight`` and ``split``. ``synthetic_rows`` makes realistic commits
(multi-file, multi-hunk Python diffs, a few very large ones) for tests and for
benchmarks/tokenize.py.
"""

import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from repotune.curate.table import DATASET, SPLITS
from testdata import commits


def file_change(
    path: str,
    patch: str | None,
    change_type: str = "M",
    old_path: str | None = None,
    is_binary: bool = False,
) -> dict[str, Any]:
    """One ``files`` entry, with git's similarity index on renames and copies."""
    return commits.change(
        path,
        patch,
        change_type=change_type,
        old_path=old_path,
        is_binary=is_binary,
        similarity=90 if change_type in ("R", "C") else None,
    )


def commit_row(
    sha: str,
    subject: str,
    files: list[dict[str, Any]],
    body: str = "",
    weight: float = 1.0,
    split: str = "train",
    when: datetime | None = None,
) -> dict[str, Any]:
    """A curated row with every column; ``sha`` may be any string (hashed to 40 hex digits)."""
    full_sha = sha if len(sha) == 40 else hashlib.sha1(sha.encode()).hexdigest()
    when = when or datetime(2024, 1, 1, tzinfo=UTC)
    row = commits.commit_row(full_sha, subject, files, body=body, author="Ada", when=when)
    return {**row, "recency_weight": weight, "split": split}


def write_split(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as a curated Parquet file with the exact curated schema."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=DATASET), path)
    return path


def write_curated(directory: str | Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """Write ``rows`` into ``directory/{train,validation,test}.parquet`` by their ``split``."""
    return {
        split: write_split(
            Path(directory) / f"{split}.parquet", [r for r in rows if r["split"] == split]
        )
        for split in SPLITS
    }


_BASE_WORDS = (
    "parser config value items result index buffer token offset cache handle stream record "
    "schema entry counter window limit header payload request response client server"
)
_SYLLABLES = ("ka", "lo", "mi", "ren", "tor", "sel", "vi", "dan", "qu", "ex", "pos", "ul", "ta")


def _vocabulary() -> tuple[str, ...]:
    """A repository's identifiers: common words plus 300 made-up, fixed names."""
    rng = random.Random(1234)
    made_up = {
        "_".join("".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3))) for _ in range(2))
        for _ in range(300)
    }
    return (*_BASE_WORDS.split(), *sorted(made_up))


_WORDS = _vocabulary()
_VERBS = (
    "fix",
    "add",
    "remove",
    "refactor",
    "rename",
    "speed",
    "up",
    "handle",
    "support",
    "document",
    "test",
)


def _python_line(rng: random.Random) -> str:
    a, b, c = rng.choices(_WORDS, k=3)
    indent = "    " * rng.randint(1, 3)
    return indent + rng.choice(
        [
            f"{a} = {b}.{c}({rng.randint(0, 99)})",
            f"if {a} is None or len({b}) > {rng.randint(1, 64)}:",
            f"return self._{a}_{b}[{c}]",
            f'raise ValueError(f"{a} {{{b}!r}} is not a valid {c}")',
            f"for {a} in sorted(self.{b}, key=lambda x: x.{c}):",
            f"# {a} must be computed before the {b} because of the {c}",
            f"self.{a}.append({b}_{c} * 2 + {rng.randint(0, 9)})",
        ]
    )


def _hunk(rng: random.Random, start: int, size: int) -> str:
    context = [" " + _python_line(rng) for _ in range(3)]
    removed = ["-" + _python_line(rng) for _ in range(rng.randint(0, size))]
    added = ["+" + _python_line(rng) for _ in range(rng.randint(1, size))]
    trailing = [" " + _python_line(rng) for _ in range(3)]
    old_len, new_len = 6 + len(removed), 6 + len(added)
    header = f"@@ -{start},{old_len} +{start},{new_len} @@ def {rng.choice(_WORDS)}(self):"
    return "\n".join([header, *context, *removed, *added, *trailing]) + "\n"


def synthetic_rows(n: int, seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
    """``n`` realistic commits: 1-3 Python files of 1-3 hunks, 3% much larger ones."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        large = rng.random() < 0.03
        files = []
        for f in range(rng.randint(3, 8) if large else rng.randint(1, 3)):
            hunks = rng.randint(6, 20) if large else rng.randint(1, 3)
            patch = "".join(_hunk(rng, 10 + 40 * h, rng.randint(1, 5)) for h in range(hunks))
            files.append(file_change(f"src/pkg/{rng.choice(_WORDS)}_{f}.py", patch))
        subject = f"{rng.choice(_VERBS).capitalize()} {rng.choice(_WORDS)} {rng.choice(_WORDS)}"
        body = " ".join(rng.choices(_WORDS, k=rng.randint(0, 40)))
        when = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=i)
        weight = 0.5 + 0.5 * i / max(1, n - 1)
        rows.append(commit_row(f"{seed}-{split}-{i}", subject, files, body, weight, split, when))
    return rows


STARCODER2_SPECIAL = (
    "<|endoftext|>",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<repo_name>",
    "<file_sep>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<pr>",
    "<pr_status>",
    "<pr_base>",
    "<pr_file>",
    "<pr_base_code>",
    "<pr_diff>",
    "<pr_diff_hunk>",
    "<pr_comment>",
)


def save_hub_like_tokenizer(directory: str | Path, special: tuple[str, ...]) -> Path:
    """A small byte-level BPE saved like a hub tokenizer: EOS first, no PAD, ``special`` tokens.

    With STARCODER2_SPECIAL it carries StarCoder2's tokens (as bigcode/starcoder2-3b does, it
    defines no pad token); with ``("<|endoftext|>",)`` it is GPT-2-like. Tests pass its local
    path where the workflow would pass a hub id, so nothing is downloaded.
    """
    texts = ["".join(row["subject"] for row in synthetic_rows(50, seed=3))] * 2
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=special[0], extra_special_tokens=list(special[1:])
    )
    wrapped.save_pretrained(str(directory))
    return Path(directory)
