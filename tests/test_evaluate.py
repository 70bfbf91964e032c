"""Evaluation plumbing: questions from commits, answers read from generations, scores into the
report's metric table (the metric functions themselves are tested in test_metrics.py)."""

import functools
import random

import pytest

from repotune.config import resolve_config
from repotune.curate.redact import Redactor, RedactSettings
from repotune.evaluate.behaviour import BehaviourTest, CheckResult
from repotune.evaluate.fim_tasks import FimTask
from repotune.evaluate.perplexity import CommitScores
from repotune.evaluate.report import EXPLORATORY, METRICS, NOT_JUDGED, VARIANTS
from repotune.evaluate.significance import SIGN_TEST
from repotune.evaluate.stage import (
    EvaluateRequest,
    Questions,
    _generation_facts,
    _generation_rows,
    base_facts,
    behaviour_by_kind,
    behaviour_results,
    behaviour_rows,
    item_commits,
    metrics_table,
    questions,
    redacted,
    task_budgets,
    task_scores,
)
from repotune.evaluate.tasks import (
    CODE_CHANGE,
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
from repotune.inference.budget import Budget
from repotune.inference.decoding import Generation
from repotune.inference.prompts import CODE_STOPS
from repotune.inference.record import RunRecord, run_record
from repotune.inference.stops import find_stop
from repotune.shards.render import (
    CHANGE_TO_MESSAGE,
    MESSAGE_TO_CHANGE,
    PLAIN,
    STARCODER2,
    render,
    render_prompt,
)
from repotune.shards.tokenizer import TextEncoder, train_bpe
from testdata.curated import commit_row, file_change, write_split

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


def _record(template) -> RunRecord:
    return run_record(template, _tokenizer(template), 1024, fim_files=False)


def generated(text: str, finish: str = "stop") -> Generation:
    return Generation(text=text, new_tokens=1, prompt_tokens=1, truncated=False, finish=finish)


def test_commit_message_question_is_the_training_rendering_split_at_the_marker():
    [example] = commit_message_examples([COMMIT], _record(PLAIN), _encoder(PLAIN))
    assert example.task == COMMIT_MESSAGE and example.sha == COMMIT["sha"]
    assert example.prompt == render_prompt(COMMIT, CHANGE_TO_MESSAGE, PLAIN)
    assert example.prompt + example.reference == render(COMMIT, CHANGE_TO_MESSAGE, PLAIN)
    assert example.reference == "Use sys and json\n\nThe tool needs both.\n"


@pytest.mark.parametrize("template", [PLAIN, STARCODER2], ids=lambda t: t.name)
def test_code_change_question_is_a_prefix_of_the_training_rendering(template):
    full = render(COMMIT, MESSAGE_TO_CHANGE, template)
    runs = {"import sys\nimport json", "NEW = 2", "    stop()"}
    asked = set()
    record, encoder = _record(template), _encoder(template)
    for seed in range(40):
        example = code_change_example(COMMIT, record, seed, encoder)
        assert example.task == CODE_CHANGE
        assert full.startswith(example.prompt)
        assert example.prompt.startswith(render_prompt(COMMIT, MESSAGE_TO_CHANGE, template))
        # The prompt ends with the first "+" of the run: it says that an added line starts.
        assert example.prompt.endswith("\n+")
        assert encoder.decode(example.prompt_ids) == example.prompt
        rest = full[len(example.prompt) :]
        assert answer(CODE_CHANGE, rest) == example.reference
        asked.add(example.reference)
    # Each run of added lines can be asked (never the "+++ b/..." header line).
    assert asked == runs
    first = code_change_example(COMMIT, record, 3, encoder)
    assert first == code_change_example(COMMIT, record, 3, encoder)


def test_commits_that_add_nothing_are_not_asked_for_code():
    deletion = commit_row("del", "Drop old code", [file_change("a.py", "@@ -1,2 +1 @@\n x\n-y\n")])
    binary = commit_row("bin", "Add logo", [file_change("logo.png", None, is_binary=True)])
    record = _record(PLAIN)
    assert code_change_example(deletion, record, 0, _encoder(PLAIN)) is None
    assert code_change_example(binary, record, 0, _encoder(PLAIN)) is None
    examples = code_change_examples(
        [deletion, COMMIT, binary], record, seed=0, size=5, encoder=_encoder(PLAIN)
    )
    assert [example.sha for example in examples] == [COMMIT["sha"]]


def test_a_generation_is_read_up_to_its_first_non_added_line():
    assert added_code("+a = 1\n+b = 2\n c = 3\n+d = 4") == "a = 1\nb = 2"
    assert added_code(" context first\n+late") == ""
    assert added_code("") == ""
    # A code change's answer is the "+" its prompt ends with, then the generation.
    assert answer(CODE_CHANGE, "x\n+y\n-z") == "x\ny"
    assert answer(CODE_CHANGE, "") == ""
    assert answer(COMMIT_MESSAGE, "+x\n-y") == "+x\n-y"
    # The generation stops where the run ends: at a context, removed, hunk or file line.
    assert find_stop("x\n+y\n z", CODE_STOPS, prefix="\n+") == 4
    assert find_stop(" z", CODE_STOPS, prefix="+x\n") == 0


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
    examples = commit_message_examples([COMMIT], _record(PLAIN), _encoder(PLAIN))
    code_examples = code_change_examples([COMMIT], _record(PLAIN), 0, 1, _encoder(PLAIN))
    generations = {
        "base": {
            COMMIT_MESSAGE: [generated("Something else")],
            CODE_CHANGE: [generated("")],  # stopped at once: an empty added line
        },
        "adapted": {
            COMMIT_MESSAGE: [generated("Use sys and json\n\nThe tool needs both.\n")],
            CODE_CHANGE: [generated(code_examples[0].reference.replace("\n", "\n+"))],
        },
    }
    message = task_scores(COMMIT_MESSAGE, examples, generations)
    code = task_scores(CODE_CHANGE, code_examples, generations)
    ppl = {
        "base": CommitScores(nll=[120.0, 80.0], tokens=[30, 20]),
        "adapted": CommitScores(nll=[90.0, 60.0], tokens=[30, 20]),
    }
    checks = {
        "base": [CheckResult(True, "ok"), CheckResult(False, "timeout")],
        "adapted": [CheckResult(True, "ok"), CheckResult(True, "ok")],
    }
    table = metrics_table(ppl, message, code, checks, seed=0, test_commits=1)
    assert list(table) == [name for name in METRICS if METRICS[name].task != "fim"]  # FIM off
    assert table["perplexity"]["base"] == pytest.approx(2.718281828**4, rel=1e-6)
    assert table["perplexity"]["delta"] < 0 and table["perplexity"]["count"] == 50
    assert table["perplexity"]["interval"]["n"] == 2  # units resampled (commits)
    entry = table["commit_message.subject_exact_match"]
    assert {key: entry[key] for key in ("base", "adapted", "delta", "count", "unit")} == {
        "base": 0.0,
        "adapted": 1.0,
        "delta": 1.0,
        "count": 1,
        "unit": "prompts",
    }
    # One test commit, one prompt: intervals are computed but no verdict is given.
    assert entry["interval"]["delta"] == [1.0, 1.0] and entry["verdict"] == "too few to tell"
    assert table["perplexity"]["verdict"] == "too few to tell"
    assert table["code_change.exact_match"]["adapted"] == 1.0
    assert table["code_change.edit_similarity"]["base"] == 0.0
    assert table["behaviour.pass_rate"]["base"] == 0.5
    assert table["behaviour.pass_rate"]["delta"] == 0.5


def test_metric_table_gives_verdicts_on_enough_items():
    rng = random.Random(0)
    n = 40
    base = [rng.random() for _ in range(n)]
    message = {
        "base": {"rouge_l": base},
        "adapted": {"rouge_l": [value + rng.gauss(0, 0.3) for value in base]},
    }
    code = {
        "base": {"exact_match": [0.0] * n},
        "adapted": {"exact_match": [1.0] * (n // 2) + [0.0] * (n // 2)},
    }
    tokens = [rng.randint(50, 100) for _ in range(n)]
    ppl = {
        "base": CommitScores(nll=[5.0 * t for t in tokens], tokens=tokens),
        "adapted": CommitScores(nll=[4.0 * t + rng.gauss(0, 5) for t in tokens], tokens=tokens),
    }
    checks = {name: [CheckResult(True, "ok")] * 6 for name in ("base", "adapted")}
    table = metrics_table(ppl, message, code, checks, seed=0, test_commits=n)
    assert table["perplexity"]["verdict"] == "better"
    assert table["bits_per_token"]["verdict"] == "better"
    assert table["code_change.exact_match"]["verdict"] == "better"
    low, high = table["commit_message.rouge_l"]["interval"]["delta"]
    assert low < 0 < high and table["commit_message.rouge_l"]["role"] == EXPLORATORY
    assert table["commit_message.rouge_l"]["verdict"] == NOT_JUDGED
    assert table["behaviour.pass_rate"]["verdict"] == NOT_JUDGED  # exploratory
    # The primary metric (bits per token by default) is judged alone, secondaries Holm-adjusted.
    assert table["bits_per_token"]["role"] == table["perplexity"]["role"] == "primary"
    assert table["perplexity"]["p"] == table["bits_per_token"]["p"] < 0.05
    exact = table["code_change.exact_match"]
    assert exact["role"] == "secondary" and exact["test"] == SIGN_TEST
    assert exact["p"] == pytest.approx(2 * 0.5**20)  # 20 wins, no loss: McNemar exact
    # The only secondary: ROUGE-L and the pass rate are exploratory, outside the Holm family.
    assert exact["p_adjusted"] == exact["p"] < 0.05
    assert table["commit_message.rouge_l"]["p_adjusted"] is None
    # Same seed, same intervals.
    again = metrics_table(ppl, message, code, checks, seed=0, test_commits=n)
    assert again["perplexity"]["interval"] == table["perplexity"]["interval"]


def test_metric_table_resamples_commits_and_gates_every_metric():
    """A run shaped like the audited one: 26 test commits. Perplexity's n is commits (not
    blocks), FIM questions of one commit are one unit, and a large behaviour test file does not
    escape the 30-commit gate."""
    rng = random.Random(1)
    shas = [f"{i:040x}" for i in range(26)]
    tokens = [rng.randint(50, 5000) for _ in shas]
    ppl = {
        "base": CommitScores([5.0 * t for t in tokens], tokens, shas, blocks=289),
        "adapted": CommitScores([4.0 * t for t in tokens], tokens, shas, blocks=289),
    }
    questions = [shas[i // 3] for i in range(60)]  # three FIM questions per commit
    fim = {
        "base": {"exact_match": [0.0] * 60, "edit_similarity": [0.1] * 60, "parses": []},
        "adapted": {"exact_match": [1.0] * 60, "edit_similarity": [0.9] * 60, "parses": []},
    }
    message = {name: {"rouge_l": [0.5] * 26} for name in VARIANTS}
    code = {name: {"exact_match": [0.0] * 26} for name in VARIANTS}
    checks = {
        "base": [CheckResult(False, "no")] * 40,
        "adapted": [CheckResult(True, "ok")] * 40,
    }
    commits = {"fim": questions, "fim.parses": [], "commit_message": shas}
    table = metrics_table(ppl, message, code, checks, 0, 26, fim, commits)
    assert table["perplexity"]["interval"]["n"] == 26 and table["perplexity"]["unit"] == "commits"
    assert table["fim.exact_match"]["interval"]["n"] == 20  # 60 questions from 20 commits
    assert table["fim.exact_match"]["count"] == 60
    assert table["fim.parses"]["verdict"] == "n/a"
    assert table["behaviour.pass_rate"]["p"] < 0.001  # 40 wins in 40 tests, yet:
    assert {entry["verdict"] for entry in table.values()} <= {"too few to tell", "n/a", NOT_JUDGED}
    with pytest.raises(ValueError, match="not scored on the same commits"):
        metrics_table(
            {**ppl, "base": CommitScores([1.0], [1], ["x"])}, message, code, checks, 0, 26
        )


def test_item_commits_names_each_scored_items_commit():
    fim_tasks = [
        FimTask("a" * 40, "x.py", "python", "def f():\n", "    return 1\n", ""),
        FimTask("b" * 40, "x.js", "javascript", "let a;\n", "a = 1;\n", ""),
        FimTask("c" * 40, "y.py", "python", "def f(:\n", "    pass\n", ""),  # never parses
    ]
    messages = commit_message_examples([COMMIT], _record(PLAIN), _encoder(PLAIN))
    asked = Questions(messages, [], [], 3, fim_tasks)
    found = item_commits(asked)
    assert found[COMMIT_MESSAGE] == [COMMIT["sha"]] and found[CODE_CHANGE] == []
    assert found["fim.exact_match"] == ["a" * 40, "b" * 40, "c" * 40]
    assert found["fim.parses"] == ["a" * 40]  # measured on Python files that parse


SECRET = "password = 'Xk9#mQ2$vL7pR4'"


def test_generations_and_failure_reasons_are_redacted():
    redactor = Redactor(RedactSettings(emails=True, entropy_threshold=3.0, min_secret_length=8))
    tests = [BehaviourTest(name="no-password", prompt="p", must_not_match=("password.*",))]
    leaked = generated(f"Fix login\n\n{SECRET} by ada@example.org")
    generations = {name: {"behaviour": [leaked], COMMIT_MESSAGE: [leaked]} for name in VARIANTS}
    checks = behaviour_results(tests, generations)
    assert "Xk9#mQ2" in checks["base"][0].reason  # the raw reason quotes the secret
    rows = behaviour_rows(tests, checks, redactor)
    assert rows[0]["kind"] == "pattern" and not rows[0]["adapted"]["passed"]
    assert "Xk9#mQ2" not in str(rows) and "<PASSWORD>" in rows[0]["base"]["reason"]
    examples = commit_message_examples([COMMIT], _record(PLAIN), _encoder(PLAIN))
    asked = Questions(commit_messages=examples, code_changes=[], behaviour=tests, test_commits=1)
    written = str(list(_generation_rows(asked, redacted(generations, redactor))))
    assert "Xk9#mQ2" not in written and "ada@example.org" not in written
    assert "<PASSWORD>" in written and "<EMAIL>" in written


def test_behaviour_pass_rate_per_kind():
    tests = [
        BehaviourTest(name="a", prompt="", must_match=("x",)),
        BehaviourTest(name="b", prompt="", must_match=("y",)),
        BehaviourTest(name="c", prompt="", python_test="assert True"),
    ]
    checks = {
        "base": [CheckResult(True, "ok"), CheckResult(False, "no"), CheckResult(False, "no")],
        "adapted": [CheckResult(True, "ok"), CheckResult(True, "ok"), CheckResult(True, "ok")],
    }
    assert behaviour_by_kind(tests, checks) == {
        "pattern": {"count": 2, "base": 0.5, "adapted": 1.0},
        "python": {"count": 1, "base": 0.0, "adapted": 1.0},
    }


def test_finish_reasons_are_all_counted():
    generations = {
        "base": {COMMIT_MESSAGE: [generated("a", "length"), generated("b", "length")]},
        "adapted": {COMMIT_MESSAGE: [generated("a", "eos"), generated("b", "length")]},
    }
    facts = _generation_facts(generations, {COMMIT_MESSAGE: Budget(100, 8)})[COMMIT_MESSAGE]
    assert facts["base"]["finish"] == {"eos": 0, "stop": 0, "length": 2}
    assert facts["adapted"]["finish"] == {"eos": 1, "stop": 0, "length": 1}


def test_base_is_read_from_base_json(tmp_path):
    (tmp_path / "base.json").write_text('{"source": "built", "name": "tiny", "architecture": {}}')
    assert base_facts(tmp_path) == {
        "source": "built",
        "name": "tiny",
        "description": "untrained (random initialisation)",
    }
    (tmp_path / "base.json").write_text('{"source": "pretrained", "name": "g", "id": "gpt2"}')
    assert base_facts(tmp_path)["description"] == "`gpt2` (pretrained)"


def test_behaviour_checks_use_each_variants_generation():
    tests = [BehaviourTest(name="word", prompt="p", must_match=(r"\w",))]
    generations = {
        "base": {"behaviour": [generated("  ")]},
        "adapted": {"behaviour": [generated("Fix typo")]},
    }
    results = behaviour_results(tests, generations)
    assert [r.passed for r in results["base"]] == [False]
    assert [r.passed for r in results["adapted"]] == [True]


def test_reads_test_commits(tmp_path):
    path = write_split(tmp_path / "test.parquet", [COMMIT])
    [commit] = read_commits(path)
    assert commit["subject"] == COMMIT["subject"] and len(commit["files"]) == 2


def test_every_task_gets_the_budget_suggest_gets():
    settings = resolve_config({})["evaluate"]
    record = run_record(STARCODER2, _tokenizer(STARCODER2), 256, fim_files=False)
    budgets = task_budgets(settings, record, 256, [COMMIT_MESSAGE, CODE_CHANGE])
    # 64 new tokens fit beside a prompt of the context less 64; 128 take half of it.
    assert budgets == {COMMIT_MESSAGE: Budget(192, 64), CODE_CHANGE: Budget(128, 128)}
    assert task_budgets(settings, record, None, [COMMIT_MESSAGE]) == {
        COMMIT_MESSAGE: Budget(255, 64)
    }


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
    asked = questions(request, _record(PLAIN), _tokenizer(PLAIN))
    assert asked.test_commits == 6 and asked.behaviour == [] and asked.code_changes == []
    assert len(asked.commit_messages) == 4
    assert [e.sha for e in asked.commit_messages] == [
        e.sha for e in questions(request, _record(PLAIN), _tokenizer(PLAIN)).commit_messages
    ]
