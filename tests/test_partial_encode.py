"""A long change->message commit is encoded only as far as its cut can reach, and its document
is the same as if the whole commit had been encoded (repotune.shards.prompt.encoded_first,
repotune.shards.stage.encode_split): the stage writes the same shard bytes either way, for any
budget of characters, with a byte-level BPE and with a tokenizer that merges a file's header
into its first hunk (whose unencoded files are judged by a probe)."""

from pathlib import Path

import pytest
from datasets import load_from_disk
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import repotune.shards.prompt
import repotune.shards.stage
from repotune.config import resolve_config
from repotune.curate.table import SPLITS
from repotune.models import resolve_model
from repotune.shards.prompt import change_files, context_texts
from repotune.shards.render import CHANGE_TO_MESSAGE, PLAIN, render, render_parts, task_opening
from repotune.shards.shorten import Unencoded
from repotune.shards.stage import TokenizeSettings, tokenize_stage
from repotune.shards.tokenizer import EOS, PAD, TextEncoder
from testdata.curated import commit_row, file_change, synthetic_rows, write_curated

SEQ_LEN = 128
MERGING_SEQ_LEN = 384
"""Half of a block's room holds a few of the many-files commit's small files whole with the
merging tokenizer (its tokens are short, its marks long)."""


SMALL_HUNK = "@@ -10,3 +10,3 @@ def record(self):\n x = 1\n-y = 2\n+y = 3\n"
"""A hunk that starts like most of the synthetic history's: the merging tokenizer below joins
its ``@@`` to the newline before it."""


def _lines(count: int) -> str:
    return "".join(f"+value_{i} = compute({i})\n" for i in range(count))


def _rows() -> list[dict]:
    """3% of synthetic commits are large (3-8 files of 6-20 hunks), and most others are longer
    than a 128-token block too; and two that need more than their first pieces: a small first
    file before a large one (its first piece fits the block), and a message of over half a
    block (its subject, shorter, leaves the change more room than its first hunk, all that was
    encoded before the message's length was known); and a large file before small ones, whose
    headers a cut shows (with a merging tokenizer, only with their first hunks, which were not
    encoded: their probes say so)."""
    small_first = commit_row(
        "small first",
        "Add values",
        [
            file_change("a.py", "@@ -1 +1 @@\n-x = 1\n+x = 2\n"),
            file_change("values.py", "@@ -1,2 +1,60 @@\n" + _lines(60)),
        ],
    )
    long_message = commit_row(
        "long message",
        "Add more values",
        [
            file_change(
                "v.py",
                "@@ -1 +1 @@\n-x = 1\n+x = 2\n"
                + "".join(f"@@ -{10 * i} +{10 * i},6 @@\n" + _lines(6) for i in range(1, 10)),
            )
        ],
        body=" ".join(["because"] * 120),
    )
    many_files = commit_row(
        "many files",
        "Add values and small files",
        [file_change("src/pkg/values_0.py", SMALL_HUNK + _lines(40))]
        + [file_change(f"src/pkg/{name}_0.py", SMALL_HUNK) for name in "abcdefgh"],
    )
    rows = synthetic_rows(240, seed=11, split="train") + synthetic_rows(40, 12, "validation")
    return [small_first, long_message, many_files, *rows]


def _merging_tokenizer(directory: Path) -> Path:
    """A BPE with no pre-tokenizer: its merges run across line ends, so a file header's last
    newline merges with the ``@@`` of its first hunk (repotune.shards.shorten.FileIds.atomic)."""
    texts = [render(row, CHANGE_TO_MESSAGE, PLAIN) for row in synthetic_rows(80, seed=13)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=[EOS, PAD, *PLAIN.markers],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=list(PLAIN.markers),
    )
    wrapped.save_pretrained(str(directory))
    return directory


def _shards(root: Path, dataset: dict, model, seq_len: int) -> tuple[dict, dict[str, object]]:
    section = {"seq_len": seq_len, "shard_tokens": 16 * seq_len, "message_to_change": 0.0}
    settings = TokenizeSettings.from_config(resolve_config({"tokenize": section})["tokenize"])
    stats = tokenize_stage(
        dataset,
        root / "tokenizer",
        {split: root / split for split in SPLITS},
        root / "stats.json",
        settings,
        model,
        threads=2,
    )
    return stats, {split: load_from_disk(str(root / split)).data.table for split in SPLITS}


class _Calls:
    """Counts what the stage did past its first encode: pieces encoded later, cuts retried."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.later = self.retried = 0
        encode_rest = repotune.shards.stage._encode_rest
        cut = repotune.shards.stage.change_to_message_ids

        def counted_rest(encode, parts, piece_ids, commits):
            self.later += sum(ids is None for i in commits for ids in piece_ids[i])
            return encode_rest(encode, parts, piece_ids, commits)

        def counted_cut(*args, **kwargs):
            try:
                return cut(*args, **kwargs)
            except Unencoded:
                self.retried += 1
                raise

        monkeypatch.setattr(repotune.shards.stage, "_encode_rest", counted_rest)
        monkeypatch.setattr(repotune.shards.stage, "change_to_message_ids", counted_cut)


@pytest.mark.parametrize("per_token", [0.5, 4])
@pytest.mark.parametrize("tokenizer", ["train-bpe", "merging"])
def test_a_long_change_is_encoded_as_far_as_its_cut_reaches_and_cut_the_same(
    tmp_path, monkeypatch, per_token, tokenizer
) -> None:
    """``per_token`` characters a token of the block are encoded first: at 0.5 only the first
    piece of a change, so some commits need more (their pieces encoded later, or a cut that
    reaches past them retried), at 4 (the default) few do; the shards are the bytes of a run
    that encodes every piece."""
    dataset = write_curated(tmp_path / "dataset", _rows())
    seq_len = SEQ_LEN
    if tokenizer == "merging":
        path = _merging_tokenizer(tmp_path / "merging")
        model = resolve_model({"name": "merging", "base": str(path), "template": "plain"})
        seq_len = MERGING_SEQ_LEN
    else:
        model = resolve_model({"preset": "tiny", "bpe_vocab_size": 600})
    with monkeypatch.context() as whole:
        whole.setattr(repotune.shards.stage, "encoded_first", lambda parts, *_: [True] * len(parts))
        full_stats, full = _shards(tmp_path / "full", dataset, model, seq_len)
    monkeypatch.setattr(repotune.shards.prompt, "CHARACTERS_PER_TOKEN", per_token)
    calls = _Calls(monkeypatch)
    stats, partial = _shards(tmp_path / "partial", dataset, model, seq_len)
    for split in SPLITS:
        assert partial[split].equals(full[split]), split
    cut = stats["splits"]["train"]["change_to_message_cut"]
    assert full_stats["splits"]["train"]["change_to_message_cut"]["pieces_not_encoded"] == 0
    assert cut["changes_cut"] > 20, cut
    if per_token < 1:
        assert calls.later > 0 and calls.retried > 0, (calls.later, calls.retried)
    else:  # the default leaves pieces out
        assert cut["pieces_not_encoded"] > 0, cut


def test_the_merging_tokenizer_joins_a_header_to_its_hunk(tmp_path) -> None:
    """What the test above relies on: with that tokenizer, files are atomic (their header's own
    ids are not a prefix of their first piece's), so an unencoded file's probe decides."""
    path = _merging_tokenizer(tmp_path / "merging")
    encoder = TextEncoder(PreTrainedTokenizerFast.from_pretrained(str(path)), PLAIN.markers)

    def atomic(row: dict) -> list[bool]:
        parts = render_parts(row, CHANGE_TO_MESSAGE, PLAIN)
        ids = encoder.marked([p.marked for p in parts])
        opening = task_opening(row, CHANGE_TO_MESSAGE, PLAIN)
        context = encoder.marked(context_texts(parts, opening))
        return [file.atomic for file in change_files(parts, ids, context)]

    many_files = next(row for row in _rows() if row["subject"] == "Add values and small files")
    assert atomic(many_files) == [True] * 9
    assert sum(sum(atomic(row)) for row in _rows()[:60]) > 10
