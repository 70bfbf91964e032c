"""The model comparison matrix from report.json files (the evaluate stage's format)."""

import json

import matplotlib.image
import pytest

from repotune.errors import InputError
from repotune.evaluate.comparison import best_model, compare, matrix
from repotune.evaluate.report import METRICS, assign_verdicts, metric_entry
from repotune.evaluate.significance import Paired


def paired(delta: tuple[float, float], n: int) -> Paired:
    p = 0.001 if delta[0] > 0 or delta[1] < 0 else 0.4
    return Paired(base=(0.0, 1.0), adapted=(0.0, 1.0), delta=delta, n=n, resamples=2000, p=p)


def report(
    model: str, perplexity: float, bleu: float, passes: float | None, test_commits: int = 200
) -> dict:
    enough = test_commits >= 30
    change = perplexity - 500.0
    return {
        "model": model,
        "samples": {"test_commits": test_commits},
        "primary_metric": "perplexity",
        "metrics": assign_verdicts(
            {
                "perplexity": metric_entry(
                    "perplexity",
                    500.0,
                    perplexity,
                    900,
                    paired((change - 20, change + 20), 60),
                    enough,
                ),
                "commit_message.bnorm_bleu": metric_entry(
                    "commit_message.bnorm_bleu", 1.0, bleu, 40, paired((-1.0, bleu), 40), enough
                ),
                "behaviour.pass_rate": metric_entry("behaviour.pass_rate", 0.5, passes, 6),
            },
            "perplexity",
            enough,
        ),
    }


def write_reports(tmp_path, *reports: dict) -> list:
    paths = []
    for item in reports:
        path = tmp_path / item["model"] / "report.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(item))
        paths.append(path)
    return paths


def test_best_model_respects_each_metrics_direction():
    reports = [report("tiny", 300.0, 4.0, 0.5), report("gpt2", 120.0, 2.0, None)]
    assert best_model(reports, "perplexity") == "gpt2"  # lower is better
    assert best_model(reports, "commit_message.bnorm_bleu") == "tiny"  # higher is better
    assert best_model(reports, "behaviour.pass_rate") == "tiny"  # gpt2 has no value
    assert (
        best_model([report("a", 1.0, 2.0, 0.5), report("b", 1.0, 3.0, 0.5)], "perplexity") is None
    )
    rows = matrix(reports)
    assert [row["metric"] for row in rows] == [
        name for name in METRICS if name in reports[0]["metrics"]
    ]
    assert rows[0]["models"]["gpt2"] == {
        "base": 500.0,
        "adapted": 120.0,
        "delta": -380.0,
        "count": 900,
        "interval": [-400.0, -360.0],
        "n": 60,
        "unit": "commits",
        "role": "primary",
        "p": 0.001,
        "verdict": "better",
    }


def test_compare_writes_the_matrix_and_a_plot(tmp_path):
    paths = write_reports(
        tmp_path, report("tiny", 300.0, 4.0, 0.5), report("starcoder2-3b", 120.0, 9.5, 1.0)
    )
    table, plot = tmp_path / "comparison.md", tmp_path / "comparison.png"
    compare(paths, table, plot)
    text = table.read_text()
    assert "| metric | `tiny` | `starcoder2-3b` |" in text
    assert "Primary metric: perplexity (`evaluate.primary_metric`)" in text
    assert (
        "| perplexity ↓ (primary) | 300.00 (-200.00 [-220.00, -180.00]; p=0.001; better), "
        "n=60 commits | **120.00** (-380.00 [-400.00, -360.00]; p=0.001; better), n=60 commits |"
        in text
    )
    assert (
        "| message B-Norm BLEU ↑ (exploratory) | 4.00 (+3.00 [-1.00, +4.00]; p=0.400; no "
        "verdict (exploratory)), n=40 commits | **9.50** (+8.50 [-1.00, +9.50]; p=0.400; no "
        "verdict (exploratory)), n=40 commits |" in text
    )
    assert "too few" not in text
    assert "![comparison](comparison.png)" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(plot).shape[1] > 100


def test_one_model_gives_a_one_column_table(tmp_path):
    [path] = write_reports(tmp_path, report("tiny", 300.0, 4.0, None))
    compare([path], tmp_path / "c.md", tmp_path / "c.png")
    text = (tmp_path / "c.md").read_text()
    assert "| metric | `tiny` |" in text
    assert "| behaviour pass rate ↑ (exploratory) | n/a (n/a; p=n/a; n/a), n=6 |" in text


def test_a_model_with_too_few_test_commits_is_marked(tmp_path):
    paths = write_reports(
        tmp_path, report("tiny", 300.0, 4.0, 0.5, test_commits=2), report("gpt2", 120.0, 9.5, 1.0)
    )
    compare(paths, tmp_path / "c.md", tmp_path / "c.png")
    text = (tmp_path / "c.md").read_text()
    assert "| metric | `tiny` (too few test commits: 2) | `gpt2` |" in text
    assert "`tiny`: its test split has only 2 commits, fewer than the 30" in text
    assert "`curate.split.test_size`" in text and "`gpt2`: its test split" not in text
    assert "300.00 (-200.00 [-220.00, -180.00]; p=0.001; too few to tell), n=60 commits" in text


def test_unreadable_report_is_an_input_error(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="rerun evaluate"):
        compare([bad], tmp_path / "c.md", tmp_path / "c.png")
