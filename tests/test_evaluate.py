"""Evaluation plumbing: questions from commits, answers read from generations, scores into the
report's metric table (the metric functions themselves are tested in test_metrics.py)."""

import functools
import sys
from pathlib import Path

import pytest

from repotune.config import resolve_config
from repotune.evaluate.behaviour import BehaviourTest, CheckResult
from repotune.evaluate.generation import Generation, find_stop
from repotune.evaluate.perplexity import from_sums
from repotune.evaluate.report import METRICS
from repotune.evaluate.stage import (
    EvaluateRequest,
    behaviour_results,
    metrics_table,
    questions,
    task_scores,
    template_of,
)
from repotune.evaluate.tasks import (
    CODE_CHANGE,
    CODE_STOP,
    COMMIT_MESSAGE,
    added_code,
    answer,
    code_change_example,
    code_change_examples,
    commit_message_examples,
    read_commits,
    sample,
    score,
)
from repotune.shards.render import (
    CHANGE_TO_MESSAGE,
    MESSAGE_TO_CHANGE,
    PLAIN,
    STARCODER2,
    render,
    render_prompt,
)
from repotune.shards.tokenizer import TextEncoder, train_bpe

sys.path.insert(0, str(Path(__file__).parent))
from tokenize_fixtures import commit_row, file_change, write_split

PATCH = (
    "@@ -1,3 +1,5 @@\n"
    " import os\n"
    "+import sys\n"
    "+import json\n"
    " \n"
    "-OLD = 1\n"
    "+NEW = 2\n"
    "@@ -20,2 +22,3 @@ def main():\n"
    "     run()\n"
    "+    stop()\n"
)
COMMIT = commit_row(
    "code",
    "Use sys and json",
    [file_change("README.md", None, is_binary=True), file_change("app/main.py", PATCH)],
    body="The tool needs both.",
)


@functools.cache
def _tokenizer(template):
    """A byte-level BPE trained on the fixture commit, with the template's markers."""
    texts = [render(COMMIT, task, template) for task in (MESSAGE_TO_CHANGE, CHANGE_TO_MESSAGE)]
    return train_bpe(texts * 4, vocab_size=300, markers=template.markers)


def _encoder(template) -> TextEncoder:
    return TextEncoder(_tokenizer(template), template.markers)


def generated(text: str) -> Generation:
    return Generation(text=text, new_tokens=1, prompt_tokens=1, truncated=False, finish="stop")


def test_commit_message_question_is_the_training_rendering_split_at_the_marker():
    [example] = commit_message_examples([COMMIT], PLAIN, _encoder(PLAIN))
    assert example.task == COMMIT_MESSAGE and example.sha == COMMIT["sha"]
    assert example.prompt == render_prompt(COMMIT, CHANGE_TO_MESSAGE, PLAIN)
    assert example.prompt + example.reference == render(COMMIT, CHANGE_TO_MESSAGE, PLAIN)
    assert example.reference == "Use sys and json\n\nThe tool needs both.\n"


@pytest.mark.parametrize("template", [PLAIN, STARCODER2], ids=lambda t: t.name)
def test_code_change_question_is_a_prefix_of_the_training_rendering(template):
    full = render(COMMIT, MESSAGE_TO_CHANGE, template)
    runs = {"import sys\nimport json", "NEW = 2", "    stop()"}
    asked = set()
    for seed in range(40):
        example = code_change_example(COMMIT, template, seed, _encoder(template))
        assert example.task == CODE_CHANGE
        assert full.startswith(example.prompt)
        assert example.prompt.startswith(render_prompt(COMMIT, MESSAGE_TO_CHANGE, template))
        # The prompt ends at a line start, right before the run; the run follows in the diff.
        assert example.prompt.endswith("\n")
        rest = full[len(example.prompt) :]
        assert added_code(rest) == example.reference
        asked.add(example.reference)
    # Each run of added lines can be asked (never the "+++ b/..." header line).
    assert asked == runs
    encoder = _encoder(template)
    first = code_change_example(COMMIT, template, 3, encoder)
    assert first == code_change_example(COMMIT, template, 3, encoder)


def test_commits_that_add_nothing_are_not_asked_for_code():
    deletion = commit_row("del", "Drop old code", [file_change("a.py", "@@ -1,2 +1 @@\n x\n-y\n")])
    binary = commit_row("bin", "Add logo", [file_change("logo.png", None, is_binary=True)])
    assert code_change_example(deletion, PLAIN, 0, _encoder(PLAIN)) is None
    assert code_change_example(binary, PLAIN, 0, _encoder(PLAIN)) is None
    examples = code_change_examples(
        [deletion, COMMIT, binary], PLAIN, seed=0, size=5, encoder=_encoder(PLAIN)
    )
    assert [example.sha for example in examples] == [COMMIT["sha"]]


def test_a_generation_is_read_up_to_its_first_non_added_line():
    assert added_code("+a = 1\n+b = 2\n c = 3\n+d = 4") == "a = 1\nb = 2"
    assert added_code(" context first\n+late") == ""
    assert added_code("") == ""
    assert answer(CODE_CHANGE, "+x\n-y") == "x"
    assert answer(COMMIT_MESSAGE, "+x\n-y") == "+x\n-y"
    # The generation stops where the run ends: at a context, removed, hunk or file line.
    assert find_stop("+x\n+y\n z", CODE_STOP) == 5
    assert find_stop(" z", CODE_STOP, prefix="+x\n") == 0


def test_sample_is_seeded_in_order_and_takes_all_when_few():
    items = list(range(50))
    drawn = sample(items, 5, seed=1)
    assert drawn == sorted(drawn) and len(set(drawn)) == 5
    assert sample(items, 5, seed=1) == drawn != sample(items, 5, seed=2)
    assert sample(items[:3], 5, seed=1) == [0, 1, 2]
    assert sample(items, 0, seed=1) == []


def test_scores_of_perfect_and_empty_answers():
    perfect = score(COMMIT_MESSAGE, [("Fix it\n", "Fix it\n"), ("Add x", "Add x")])
    assert perfect == {
        "count": 2,
        "bnorm_bleu": pytest.approx(100.0),
        "rouge_l": 1.0,
        "edit_similarity": 1.0,
        "subject_exact_match": 1.0,
    }
    code = score(CODE_CHANGE, [("", "x = 1"), ("x = 1", "x = 1")])
    assert code == {"count": 2, "exact_match": 0.5, "edit_similarity": 0.5}
    assert score(CODE_CHANGE, []) == {"count": 0, "exact_match": None, "edit_similarity": None}


def test_metric_table_has_every_metric_with_deltas_and_counts():
    examples = commit_message_examples([COMMIT], PLAIN, _encoder(PLAIN))
    code_examples = code_change_examples([COMMIT], PLAIN, 0, 1, _encoder(PLAIN))
    generations = {
        "base": {
            COMMIT_MESSAGE: [generated("Something else")],
            CODE_CHANGE: [generated(" context")],
        },
        "adapted": {
            COMMIT_MESSAGE: [generated("Use sys and json\n\nThe tool needs both.\n")],
            CODE_CHANGE: [generated("+" + code_examples[0].reference.replace("\n", "\n+"))],
        },
    }
    message = task_scores(COMMIT_MESSAGE, examples, generations)
    code = task_scores(CODE_CHANGE, code_examples, generations)
    ppl = {"base": from_sums(200.0, 50, 2), "adapted": from_sums(150.0, 50, 2)}
    checks = {
        "base": [CheckResult(True, "ok"), CheckResult(False, "timeout")],
        "adapted": [CheckResult(True, "ok"), CheckResult(True, "ok")],
    }
    table = metrics_table(ppl, message, code, checks)
    assert list(table) == list(METRICS)
    assert table["perplexity"]["base"] == pytest.approx(2.718281828**4, rel=1e-6)
    assert table["perplexity"]["delta"] < 0 and table["perplexity"]["count"] == 50
    assert table["commit_message.subject_exact_match"] == {
        "task": COMMIT_MESSAGE,
        "base": 0.0,
        "adapted": 1.0,
        "delta": 1.0,
        "higher_is_better": True,
        "count": 1,
    }
    assert table["code_change.exact_match"]["adapted"] == 1.0
    assert table["code_change.edit_similarity"]["base"] == 0.0
    assert table["behaviour.pass_rate"]["base"] == 0.5
    assert table["behaviour.pass_rate"]["delta"] == 0.5


def test_behaviour_checks_use_each_variants_generation():
    tests = [BehaviourTest(name="word", prompt="p", must_match=(r"\w",))]
    generations = {
        "base": {"behaviour": [generated("  ")]},
        "adapted": {"behaviour": [generated("Fix typo")]},
    }
    results = behaviour_results(tests, generations)
    assert [r.passed for r in results["base"]] == [False]
    assert [r.passed for r in results["adapted"]] == [True]


def test_reads_test_commits_and_the_template_tokenize_used(tmp_path):
    path = write_split(tmp_path / "test.parquet", [COMMIT])
    [commit] = read_commits(path)
    assert commit["subject"] == COMMIT["subject"] and len(commit["files"]) == 2
    stats = tmp_path / "stats.json"
    stats.write_text('{"template": {"name": "starcoder2", "requested": "starcoder2"}}')
    assert template_of(stats) is STARCODER2


def test_questions_follow_the_sample_sizes_and_skip_a_null_test_file(tmp_path):
    rows = [commit_row(f"c{i}", f"Change {i}", [file_change("a.py", PATCH)]) for i in range(6)]
    path = write_split(tmp_path / "test.parquet", rows)
    settings = resolve_config(
        {"evaluate": {"commit_messages": {"samples": 4}, "code_changes": {"samples": 0}}}
    )["evaluate"]
    fields = dict.fromkeys(EvaluateRequest.__dataclass_fields__, "")
    request = EvaluateRequest(
        **{**fields, "test_commits": str(path), "behaviour_tests": None, "settings": settings}
    )
    asked = questions(request, PLAIN, _tokenizer(PLAIN))
    assert asked.test_commits == 6 and asked.behaviour == [] and asked.code_changes == []
    assert len(asked.commit_messages) == 4
    assert [e.sha for e in asked.commit_messages] == [
        e.sha for e in questions(request, PLAIN, _tokenizer(PLAIN)).commit_messages
    ]
