"""Fill-in-the-middle evaluation: questions from the held-out future, scores and report entries.

The questions are built as the ``fim_questions`` rule builds them, from a real git history
extracted and curated by the real stages: each masks a run of lines a *test* commit added, in
the file as that commit left it. Scoring and aggregation run on generators that know the answer
(exact match 1) and that write garbage (exact match 0), through the report's metric table.
"""

import random
import subprocess

import pyarrow.parquet as pq
import pytest

from repotune.config import resolve_config
from repotune.curate.stage import CurateSettings, curate
from repotune.evaluate.behaviour import CheckResult
from repotune.evaluate.fim import (
    FIM,
    by_metric,
    fim_facts,
    fim_item_scores,
    fim_prompts,
    parses,
    parses_in_file,
    score_fim,
)
from repotune.evaluate.fim_questions import (
    FimQuestionSettings,
    build_fim_questions,
    read_fim_questions,
)
from repotune.evaluate.fim_tasks import FimTask, added_runs
from repotune.evaluate.perplexity import CommitScores
from repotune.evaluate.report import METRICS, NOT_JUDGED, markdown
from repotune.evaluate.stage import metrics_table
from repotune.evaluate.tasks import CODE_METRICS, MESSAGE_METRICS
from repotune.extract.stage import ExtractSettings, extract_to_parquet
from repotune.inference.record import run_record
from repotune.shards.fim import PLAIN_FIM, fim_prompt
from repotune.shards.render import PLAIN
from repotune.shards.tokenizer import TextEncoder, train_bpe
from testdata.gitrepo import GitRepo

FUNCTIONS = ("load", "save", "parse", "render", "check", "merge", "split", "close", "open", "sync")
TEST_COMMITS = 5


def scores_of(tasks, generations):
    """Per variant, each metric's per-question scores, as evaluation resamples them."""
    return by_metric(fim_item_scores(tasks, generations))


def function(name: str) -> str:
    return f"def {name}(value):\n    result = value.{name}()\n    return result\n\n\n"


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A history of a growing module (each commit adds one function to the middle of a file),
    extracted and curated with the last five commits as the test split, one of which only
    deletes lines."""
    root = tmp_path_factory.mktemp("fim")
    repo = GitRepo(root / "repo")
    names: list[str] = []
    for name in FUNCTIONS:
        names.insert(len(names) // 2, name)
        repo.commit(
            f"Add {name}", {"pkg/ops.py": "import os\n\n\n" + "".join(map(function, names))}
        )
    names.remove("open")
    repo.commit("Drop open", {"pkg/ops.py": "import os\n\n\n" + "".join(map(function, names))})
    config = resolve_config(
        {"curate": {"split": {"test_size": TEST_COMMITS, "validation_size": 1}}}
    )
    extract_to_parquet(
        repo.path,
        repo.head(),
        root / "commits.parquet",
        root / "stats.json",
        root / "cache.parquet",
        ExtractSettings.from_config(config["extract"]),
        threads=1,
    )
    splits = {name: root / f"{name}.parquet" for name in ("train", "validation", "test")}
    curate(
        root / "commits.parquet",
        splits,
        root / "curate.json",
        CurateSettings.from_config(config["curate"]),
    )
    return repo, splits, config


def build(history, tmp_path, samples=50, seed=0, name="q"):
    repo, splits, config = history
    settings = FimQuestionSettings.from_config(
        {
            "samples": samples,
            "seed": seed,
            "max_file_bytes": config["snapshot"]["max_file_bytes"],
            "curate": config["curate"],
        }
    )
    output = tmp_path / f"{name}.parquet"
    report = build_fim_questions(
        repo.path, splits["test"], output, tmp_path / f"{name}.json", settings
    )
    return read_fim_questions(output), report, output


def test_questions_mask_lines_test_commits_added_in_their_post_images(history, tmp_path):
    repo, splits, _ = history
    tasks, report, _ = build(history, tmp_path)
    test_rows = pq.read_table(splits["test"]).to_pylist()
    train_shas = set(pq.read_table(splits["train"], columns=["sha"]).column("sha").to_pylist())
    assert len(test_rows) == TEST_COMMITS
    assert report["asked"] == len(tasks) == TEST_COMMITS - 1  # the deletion adds nothing
    assert report["skipped"]["no_added_lines"] == 1 and report["test_commits"] == TEST_COMMITS
    patches = {row["sha"]: row["files"][0]["patch"] for row in test_rows}
    for task in tasks:
        assert task.sha in patches and task.sha not in train_shas
        post_image = subprocess.run(
            ["git", "cat-file", "blob", f"{task.sha}:{task.path}"],
            cwd=repo.path, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert task.prefix + task.middle + task.suffix == post_image
        first = task.prefix.count("\n") + 1
        last = first + task.middle.count("\n")
        assert (first, last) in added_runs(patches[task.sha])
        added = [line[1:] for line in patches[task.sha].splitlines() if line.startswith("+")]
        assert task.middle.splitlines() == added  # one function added: its lines are the run
        assert task.language == "python" and task.path == "pkg/ops.py"


def test_questions_are_deterministic_and_the_sample_is_a_seeded_draw(history, tmp_path):
    first, _, path = build(history, tmp_path, name="a")
    again, _, again_path = build(history, tmp_path, name="b")
    assert first == again
    assert pq.read_table(path).equals(pq.read_table(again_path))
    two, report, _ = build(history, tmp_path, samples=2, name="c")
    assert len(two) == 2 and report["skipped"]["not_drawn"] == len(first) - 2
    assert {task.sha for task in two} <= {task.sha for task in first}
    draws = {
        tuple(t.sha for t in build(history, tmp_path, 2, seed, f"s{seed}")[0]) for seed in range(6)
    }
    assert len(draws) > 1  # the seed chooses which commits are asked


def test_files_over_the_size_limit_are_skipped_and_counted(history, tmp_path):
    repo, splits, config = history
    settings = FimQuestionSettings.from_config(
        {"samples": 50, "seed": 0, "max_file_bytes": 10, "curate": config["curate"]}
    )
    report = build_fim_questions(
        repo.path, splits["test"], tmp_path / "q.parquet", tmp_path / "q.json", settings
    )
    assert report["asked"] == 0 and report["skipped"]["too_large"] == TEST_COMMITS - 1
    assert read_fim_questions(tmp_path / "q.parquet") == []


def python_task(index: int) -> FimTask:
    return FimTask(
        sha=f"{index:040x}",
        path=f"pkg/m{index}.py",
        language="python",
        prefix=f"def f{index}(x):\n",
        middle=f"    y = x + {index}\n    return y\n",
        suffix="\n\nVALUE = 1\n",
    )


def table_with(fim):
    """The report's metric table with these FIM scores (the other metrics from fixed scores)."""
    ppl = {name: CommitScores(nll=[10.0] * 40, tokens=[5] * 40) for name in ("base", "adapted")}
    message = {name: dict.fromkeys(MESSAGE_METRICS, [0.0] * 40) for name in ("base", "adapted")}
    code = {name: dict.fromkeys(CODE_METRICS, [0.0] * 40) for name in ("base", "adapted")}
    checks = {name: [CheckResult(True, "ok")] for name in ("base", "adapted")}
    return metrics_table(ppl, message, code, checks, seed=0, test_commits=40, fim=fim)


def test_the_real_middle_scores_one_and_garbage_zero_with_intervals_and_verdicts():
    tasks = [python_task(i) for i in range(36)]
    tasks.append(FimTask("f" * 40, "web/app.js", "javascript", "let a = 1;\n", "a += 1;\n", ""))
    middles = [task.middle for task in tasks]
    garbage = ["    return (\n" for _ in tasks]
    scores = scores_of(tasks, {"base": garbage, "adapted": middles})
    table = table_with(scores)
    assert list(table) == list(METRICS)
    exact, edit, parses = (
        table[f"{FIM}.{m}"] for m in ("exact_match", "edit_similarity", "parses")
    )
    assert (exact["base"], exact["adapted"], exact["count"], exact["unit"]) == (
        0.0,
        1.0,
        37,
        "questions",
    )
    assert exact["interval"]["delta"] == [1.0, 1.0] and exact["verdict"] == "better"
    assert edit["adapted"] == 1.0 and 0 < edit["base"] < 1 and edit["p"] < 0.05
    assert edit["verdict"] == NOT_JUDGED  # text similarity: exploratory, a null answer wins it
    assert (parses["base"], parses["adapted"], parses["count"]) == (0.0, 1.0, 36)  # Python only
    assert parses["interval"]["n"] == 36
    swapped = table_with(scores_of(tasks, {"base": middles, "adapted": garbage}))
    assert swapped[f"{FIM}.exact_match"]["verdict"] == "worse"
    few = table_with(scores_of(tasks[:5], {"base": garbage[:5], "adapted": middles[:5]}))
    assert few[f"{FIM}.exact_match"]["verdict"] == "too few to tell"


def test_report_shows_the_fim_rows_with_n_and_intervals():
    tasks = [python_task(i) for i in range(3)]
    table = table_with(
        scores_of(tasks, {"base": ["x\n"] * 3, "adapted": [t.middle for t in tasks]})
    )
    report = {
        "model": "tiny", "base_model": "tiny", "adapter": "a", "template": "plain",
        "metrics": table,
        "samples": {
            "test_commits": 40, "perplexity_blocks": 40, "perplexity_tokens": 200,
            "commit_messages": 40, "code_changes": 40, "fim_questions": 3, "behaviour_tests": 1,
        },
        "fim": {"evaluated": True, "format": "plain", "python_questions": 3},
        "generation": {"do_sample": False, "tasks": {}},
        "training": {}, "behaviour": [], "examples": [],
    }  # fmt: skip
    text = markdown(report, "loss.png", "metrics.png")
    assert "3 fill-in-the-middle questions (3 Python) asked in the `plain` FIM format" in text
    row = next(line for line in text.splitlines() if line.startswith("| FIM exact match"))
    assert row.endswith(
        "| +1.000 [+1.000, +1.000] | 0.250 (exact) | - | too few to tell | 3 questions |"
    )


def test_prompts_are_the_training_fim_prompt_or_a_continuation_of_the_prefix():
    code = [python_task(i).prefix + python_task(i).middle for i in range(30)]
    tokenizer = train_bpe(code, 400, (*PLAIN.markers, *PLAIN_FIM.markers))
    task = python_task(7)
    record = run_record(PLAIN, tokenizer, 10_001, fim_files=True)
    [prompt] = fim_prompts([task], record, tokenizer, 10_000)
    text = fim_prompt(task.prefix, task.suffix, PLAIN_FIM, path=task.path)
    assert list(prompt.ids) == TextEncoder(tokenizer, PLAIN_FIM.markers)([text])[0]
    assert PLAIN_FIM.middle in prompt.stops and tokenizer.eos_token in prompt.stops
    plain = train_bpe(code, 400, PLAIN.markers)  # no FIM tokens, no FIM documents: continue
    new_file = FimTask("0" * 40, "new.py", "python", "", "x = 1\n", "")
    without = run_record(PLAIN, plain, 10_001, fim_files=False)
    prompts = fim_prompts([task, new_file], without, plain, 10_000)
    expected = [TextEncoder(plain, PLAIN.markers)([task.prefix])[0], [plain.eos_token_id]]
    assert [list(p.ids) for p in prompts] == expected
    assert prompts[0].stops == (*PLAIN.markers, plain.eos_token)
    # Trained on FIM documents in the plain format: asked in it, markers as text.
    as_text = run_record(PLAIN, plain, 10_001, fim_files=True)
    assert as_text.fim == PLAIN_FIM and not as_text.fim_special
    [prompt] = fim_prompts([task], as_text, plain, 10_000)
    assert list(prompt.ids) == TextEncoder(plain, PLAIN_FIM.markers)([text])[0]
    assert PLAIN_FIM.middle in prompt.stops


def test_parses_is_measured_only_where_the_real_file_parses():
    task = python_task(1)
    assert score_fim(task, task.middle)["parses"] == 1.0
    assert score_fim(task, "    return (\n")["parses"] == 0.0
    broken = FimTask("0" * 40, "a.py", "python", "def f(:\n", "    pass\n", "")
    assert score_fim(broken, "    pass\n")["parses"] is None
    rng = random.Random(0)
    text = "".join(rng.choice("ab \n") for _ in range(40))
    assert score_fim(FimTask("0" * 40, "a.md", "markdown", "", text, ""), text)["parses"] is None


def test_a_test_commits_post_image_is_read_from_git_not_the_work_tree(history, tmp_path):
    repo, _, _ = history
    (repo.path / "pkg" / "ops.py").write_text("changed in the work tree\n")
    try:
        tasks, _, _ = build(history, tmp_path)
        assert all("changed in the work tree" not in task.prefix + task.suffix for task in tasks)
    finally:
        subprocess.run(["git", "checkout", "--", "."], cwd=repo.path, check=True)


def test_an_empty_or_blank_middle_never_parses():
    task = python_task(1)  # "def f1(x):\n" + middle + suffix: the gap is the whole body
    assert parses(task, "") is False and parses(task, "  \n\t\n") is False
    assert parses(task, task.middle) is True
    assert score_fim(task, "\n")["parses"] == 0.0
    assert parses_in_file(task, "") is False and parses_in_file(task, "    pass\n") is True


def test_parses_is_measured_only_where_the_gap_left_empty_does_not_parse():
    """A statement between statements parses when left out: there any answer that breaks
    nothing parses, an empty one (before the fix: 16 of 17 questions of the default run) or
    another commit's code alike, so parsing cannot tell and is not measured."""
    between = FimTask("0" * 40, "a.py", "python", "x = 1\n", "y = 2\n", "z = 3\n")
    assert parses(between, "") is None and parses(between, "w = 4\n") is None
    assert score_fim(between, "y = 2\n")["parses"] is None
    assert parses_in_file(between, "w = 4\n") is True and parses_in_file(between, " ") is False


def test_fim_facts_show_blank_answers_and_what_parsing_can_tell():
    open_gap = [python_task(i) for i in range(3)]  # the body is missing without the middle
    closed = [
        FimTask(f"{i:040x}", "a.py", "python", "x = 1\n", "y = 2\n", "z = 3\n") for i in range(5)
    ]
    markdown_task = FimTask("a" * 40, "a.md", "markdown", "# A\n", "text\n", "")
    tasks = [*open_gap, *closed, markdown_task]
    base = [""] * len(tasks)  # answers nothing
    adapted = [task.middle for task in tasks[:-1]] + [" \n"]
    facts = fim_facts(tasks, {"base": base, "adapted": adapted})
    assert facts["empty_middle_parses"] == {"rate": 5 / 8, "parsing": 5, "n": 8}
    assert facts["base"]["empty_answers"] == {"share": 1.0, "empty": 9, "n": 9}
    assert facts["adapted"]["empty_answers"] == {"share": 1 / 9, "empty": 1, "n": 9}
    assert facts["base"]["parses_in_file"] == {"rate": 0.0, "parsing": 0, "n": 8}
    assert facts["adapted"]["parses_in_file"] == {"rate": 1.0, "parsing": 8, "n": 8}
    scores = scores_of(tasks, {"base": base, "adapted": adapted})
    assert scores["base"]["parses"] == [0.0] * 3 and scores["adapted"]["parses"] == [1.0] * 3
    none = fim_facts([markdown_task], {"base": [""], "adapted": [""]})
    assert none["empty_middle_parses"] == {"rate": None, "parsing": 0, "n": 0}
