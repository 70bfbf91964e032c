"""The run record (repotune.inference.record): written once by tokenize into stats.json, read
back by one reader, with one-line errors for a run an older repotune wrote."""

import json

import pytest

from repotune.errors import InputError
from repotune.inference.budget import Budget, budget
from repotune.inference.record import STATS_KEY, RunRecord, run_record
from repotune.shards.fim import PLAIN_FIM, STARCODER2_FIM
from repotune.shards.render import PLAIN, STARCODER2
from repotune.shards.render import layout as layout_of
from repotune.shards.tokenizer import train_bpe

CODE = [f"def f{i}(x):\n    return x + {i}\n" for i in range(20)]


def test_the_record_round_trips_through_stats_json(tmp_path):
    tokenizer = train_bpe(CODE, 400, (*PLAIN.markers, *PLAIN_FIM.markers))
    record = run_record(PLAIN, tokenizer, 256, fim_files=True)
    assert record.max_prompt_tokens == 255 and record.template is PLAIN
    assert record.fim == PLAIN_FIM and record.fim_special
    assert record.stops == (*PLAIN.markers, *PLAIN_FIM.markers, "<|endoftext|>")
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"seq_len": 256, STATS_KEY: record.to_json()}))
    assert RunRecord.read(stats) == record


def test_a_template_s_native_fim_format_needs_its_tokens():
    """A StarCoder2 template over a tokenizer without StarCoder2's FIM tokens trained its file
    documents in the plain format, as text; without file documents it has no FIM format."""
    tokenizer = train_bpe(CODE, 400, STARCODER2.markers)
    trained = run_record(STARCODER2, tokenizer, 64, fim_files=True)
    assert trained.fim == PLAIN_FIM and not trained.fim_special
    assert run_record(STARCODER2, tokenizer, 64, fim_files=False).fim is None
    native = train_bpe(CODE, 400, (*STARCODER2.markers, *STARCODER2_FIM.markers))
    assert run_record(STARCODER2, native, 64, fim_files=False).fim == STARCODER2_FIM


def test_the_budget_is_the_training_block_within_the_context():
    record = run_record(PLAIN, train_bpe(CODE, 400, PLAIN.markers), 256, fim_files=False)
    assert budget(record, 64, None) == Budget(255, 64)
    assert budget(record, 64, 256) == Budget(192, 64)
    assert budget(record, 200, 256) == Budget(128, 128)
    with pytest.raises(InputError, match="leaves 4 prompt tokens"):
        budget(record, 64, 8)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "do not exist"),
        ('{"seq_len": 64, "template": {"name": "plain"}}', "hold no valid 'inference' record"),
        ('{"inference": {"template": "nope"}}', "hold no valid 'inference' record"),
        ("not json", "hold no valid 'inference' record"),
    ],
    ids=["missing", "older run", "bad entry", "not json"],
)
def test_a_stats_file_without_a_record_is_a_one_line_error(tmp_path, content, problem):
    stats = tmp_path / "stats.json"
    if content is not None:
        stats.write_text(content)
    with pytest.raises(InputError, match=problem) as error:
        RunRecord.read(stats)
    assert str(stats) in str(error.value) and "rerun the tokenize rule" in str(error.value)
    assert len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize("layout", [None, "0123456789abcdef"], ids=["no layout", "another layout"])
def test_a_run_laid_out_otherwise_is_told_to_rerun(tmp_path, layout):
    """A run an older repotune rendered with another layout of the same template (the plain
    template's markers once stood on their own line) would be asked in a form its model never
    saw: its record is refused, with the rule to rerun."""
    record = run_record(PLAIN, train_bpe(CODE, 400, PLAIN.markers), 256, fim_files=False)
    entry = record.to_json()
    assert entry["template_layout"] == layout_of(PLAIN) != layout_of(STARCODER2)
    if layout is None:
        del entry["template_layout"]
    else:
        entry["template_layout"] = layout
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({STATS_KEY: entry}))
    with pytest.raises(InputError, match="laid out otherwise") as error:
        RunRecord.read(stats)
    assert "rerun the tokenize rule" in str(error.value)
    assert len(str(error.value).splitlines()) == 1
