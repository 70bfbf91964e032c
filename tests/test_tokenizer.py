"""Tokenizers: the trained byte-level BPE and loading hub-style tokenizers from a local path."""

import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from repotune.config import load_schema, resolve_config
from repotune.errors import InputError
from repotune.models import resolve_model
from repotune.shards.marked import join, marker, split, template_text, text
from repotune.shards.render import PLAIN, STARCODER2, TEMPLATES, render
from repotune.shards.stage import TokenizeSettings, prepare_tokenizer
from repotune.shards.tokenizer import (
    EOS,
    INLINE_CHARACTERS,
    PAD,
    TextEncoder,
    load_tokenizer,
    special_tokens,
    train_bpe,
)
from testdata.curated import (
    STARCODER2_SPECIAL,
    save_hub_like_tokenizer,
    synthetic_rows,
    write_split,
)

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = TokenizeSettings.from_config(resolve_config()["tokenize"])


def _texts() -> list[str]:
    return [render(row, "message_to_change", PLAIN) for row in synthetic_rows(60, seed=5)]


def test_trained_bpe_saves_as_a_fast_tokenizer_with_its_special_tokens(tmp_path) -> None:
    trained = train_bpe(_texts(), vocab_size=600, markers=PLAIN.markers)
    trained.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded.is_fast and len(loaded) == 600
    assert (loaded.eos_token, loaded.pad_token) == (EOS, PAD)
    assert loaded.eos_token_id != loaded.pad_token_id
    assert set(PLAIN.markers) <= special_tokens(loaded)
    text = "<|message|>\nCafé ☕ naïve 日本\n<|diff|>\n@@ -1 +1 @@\n-\tx\n+    y  \n"
    ids = loaded.backend_tokenizer.encode(text, add_special_tokens=False).ids
    assert ids[0] == loaded.convert_tokens_to_ids("<|message|>")
    assert loaded.backend_tokenizer.decode(ids, skip_special_tokens=False) == text


def test_bpe_training_is_deterministic_across_processes(tmp_path) -> None:
    texts = _texts()
    train_bpe(texts, vocab_size=600, markers=PLAIN.markers).save_pretrained(str(tmp_path / "a"))
    train_bpe(texts, vocab_size=600, markers=PLAIN.markers).save_pretrained(str(tmp_path / "b"))
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.test_tokenizer import _texts; from repotune.shards.render import PLAIN;"
        "from repotune.shards.tokenizer import train_bpe;"
        "train_bpe(_texts(), 600, PLAIN.markers).save_pretrained(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", script, str(ROOT), str(tmp_path / "c")], check=True)
    first = (tmp_path / "a" / "tokenizer.json").read_bytes()
    assert (tmp_path / "b" / "tokenizer.json").read_bytes() == first
    assert (tmp_path / "c" / "tokenizer.json").read_bytes() == first
    other = train_bpe(texts[:30], vocab_size=600, markers=PLAIN.markers)
    other.save_pretrained(str(tmp_path / "d"))
    assert (tmp_path / "d" / "tokenizer.json").read_bytes() != first


def test_a_too_small_vocabulary_is_an_input_error() -> None:
    with pytest.raises(InputError, match="bpe_vocab_size"):
        train_bpe(_texts(), vocab_size=100)


def test_every_vocabulary_the_schema_allows_trains_and_a_refusal_names_the_least(tmp_path):
    """config/schema.yaml's least ``bpe_vocab_size`` is the least tokenize trains with every
    template (its markers and its FIM format's are special tokens): no value the schema
    allows is refused later, and train_bpe's refusal says which size would do."""
    least = load_schema()["$defs"]["model_entry"]["properties"]["bpe_vocab_size"]["minimum"]
    train = write_split(tmp_path / "train.parquet", synthetic_rows(20))
    needed = []
    for name in TEMPLATES:
        entry = {"preset": "tiny", "template": name, "bpe_vocab_size": least}
        tokenizer, _ = prepare_tokenizer(resolve_model(entry), train, DEFAULTS, fim=True)
        specials = sorted(special_tokens(tokenizer))
        smallest = 256 + len(specials)
        assert len(train_bpe(_texts(), smallest, specials)) == smallest
        with pytest.raises(InputError, match=rf"use at least {smallest}$"):
            train_bpe(_texts(), smallest - 1, specials)
        needed.append(smallest)
    assert least == max(needed)


def test_hub_style_tokenizer_without_pad_pads_with_eos(tmp_path) -> None:
    path = save_hub_like_tokenizer(tmp_path / "sc2", STARCODER2_SPECIAL)
    tokenizer = load_tokenizer(str(path))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 0
    assert set(STARCODER2.markers) <= special_tokens(tokenizer)


def test_missing_tokenizer_is_an_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match="cannot be loaded"):
        load_tokenizer(str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    ("special", "expected"),
    [(STARCODER2_SPECIAL, "starcoder2"), (("<|endoftext|>", "<fim_prefix>"), "plain")],
)
def test_starcoder2_template_only_when_the_tokenizer_has_its_tokens(
    tmp_path, special, expected
) -> None:
    path = save_hub_like_tokenizer(tmp_path / "tok", special)
    train = write_split(tmp_path / "train.parquet", synthetic_rows(5))
    spec = resolve_model({"name": "local", "base": str(path), "template": "starcoder2"})
    _, template = prepare_tokenizer(spec, train, DEFAULTS)
    assert template.name == expected


def test_train_bpe_carries_the_requested_template_markers(tmp_path) -> None:
    train = write_split(tmp_path / "train.parquet", synthetic_rows(40))
    spec = resolve_model({"preset": "tiny", "template": "starcoder2", "bpe_vocab_size": 512})
    tokenizer, template = prepare_tokenizer(spec, train, DEFAULTS)
    assert template is STARCODER2
    assert set(STARCODER2.markers) <= special_tokens(tokenizer)
    assert len(tokenizer) == 512


def test_only_marked_spans_become_marker_ids() -> None:
    tokenizer = train_bpe(_texts(), 600, PLAIN.markers)
    encoder = TextEncoder(tokenizer, PLAIN.markers)
    message, diff = (tokenizer.convert_tokens_to_ids(m) for m in PLAIN.markers)
    quoted = "x = '<|message|><|diff|><|endoftext|>'\n"
    rendered = join(marker("<|message|>"), text("Fix\n" + quoted), marker("<|diff|>"), text("y\n"))
    [ids] = encoder.marked([rendered])
    assert [i for i in ids if i in (message, diff, tokenizer.eos_token_id)] == [message, diff]
    assert encoder.decode(ids) == "".join(rendered)
    # Called on text, every marker string is a marker: for text a template built whole.
    assert encoder(["".join(rendered)])[0].count(message) == 2
    assert encoder.plain([quoted]) == encoder.marked([text(quoted)])
    # A marker the tokenizer lacks is text, encoded with the text around it.
    lacking = join(text("a "), marker("<pr_diff>"), text(" b"))
    assert encoder.marked([lacking]) == encoder.plain(["a <pr_diff> b"])


def test_batches_small_and_large_and_recurring_texts_encode_alike() -> None:
    """A few texts are encoded on the calling thread, many on the tokenizer's pool, texts
    that recur once: the ids are the same every way, and each caller gets its own list."""
    tokenizer = train_bpe(_texts(), 600, PLAIN.markers)
    encoder = TextEncoder(tokenizer, PLAIN.markers)
    texts = _texts()[:5]
    assert sum(map(len, texts)) < INLINE_CHARACTERS
    many = texts * (1 + INLINE_CHARACTERS // sum(map(len, texts)))
    assert encoder.plain(texts) == encoder.plain(many)[: len(texts)]
    headers = [join(marker("<|diff|>"), text(t[:40])) for t in texts[:5]] * 3
    once = encoder.recurring(headers)
    assert once == encoder.marked(headers)
    once[0].append(-1)
    assert encoder.recurring(headers[:1]) == encoder.marked(headers[:1])


def test_marked_text_joins_and_splits_without_cutting_a_marker() -> None:
    value = join(text("ab"), marker("<m>"), text("cd"))
    assert value == ("ab", "<m>", "cd") and template_text("ab<m>cd", ("<m>",)) == value
    assert split(value, 1) == (("a",), ("b", "<m>", "cd"))
    assert split(value, 2) == (("ab",), ("", "<m>", "cd"))
    assert split(value, 5) == (("ab", "<m>", ""), ("cd",))
    assert split(value, 7) == (value, ("",))
    with pytest.raises(ValueError, match="inside the marker"):
        split(value, 3)
