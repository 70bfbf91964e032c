"""report.md, report.json's metric entries and the PNG plots, from hand-made numbers."""

import matplotlib.image
import pytest

from repotune.evaluate.report import (
    METRICS,
    format_value,
    improved,
    markdown,
    metric_entry,
    plot_loss_curves,
    plot_metrics,
    read_training_log,
    write_markdown,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample_report() -> dict:
    metrics = {name: metric_entry(name, 0.25, 0.5, 10) for name in METRICS}
    metrics["perplexity"] = metric_entry("perplexity", 400.0, 300.0, 1234)
    metrics["bits_per_token"] = metric_entry("bits_per_token", 8.64, 8.23, 1234)
    metrics["behaviour.pass_rate"] = metric_entry("behaviour.pass_rate", None, None, 0)
    return {
        "model": "tiny",
        "base_model": "results/tiny/base",
        "adapter": "results/tiny/adapter",
        "template": "plain",
        "samples": {
            "test_commits": 12,
            "perplexity_blocks": 3,
            "perplexity_tokens": 1234,
            "commit_messages": 10,
            "code_changes": 10,
            "behaviour_tests": 0,
        },
        "metrics": metrics,
        "generation": {"do_sample": False},
        "training": {"steps": 60, "epochs": 3, "tokens": 7492, "final_train_loss": 5.63,
                     "final_val_loss": None, "tokens_per_s": 9086.8},
        "behaviour": [
            {"name": "subject", "base": {"passed": True, "reason": "ok"},
             "adapted": {"passed": False, "reason": "must_match '\\w' | found nothing"}},
        ],
        "examples": [
            {"sha": "a" * 40, "reference": "Fix <b>parser</b>\n\nBody | with pipe",
             "base": "", "adapted": "Fix parser"},
        ],
    }  # fmt: skip


def test_metric_entry_delta_and_direction():
    lower = metric_entry("perplexity", 400.0, 300.0, 5)
    assert (lower["delta"], lower["higher_is_better"], improved(lower)) == (-100.0, False, True)
    higher = metric_entry("code_change.exact_match", 0.5, 0.25, 5)
    assert (higher["delta"], improved(higher)) == (-0.25, False)
    missing = metric_entry("behaviour.pass_rate", None, 0.5, 0)
    assert missing["delta"] is None and improved(missing) is None
    assert format_value("perplexity", None) == "n/a" == format_value("perplexity", float("nan"))
    assert format_value("commit_message.bnorm_bleu", 12.345) == "12.35"


def test_markdown_answers_first_then_table_training_behaviour_examples():
    text = markdown(sample_report(), "loss.png", "metrics.png")
    assert text.startswith("# Evaluation of tiny: base vs base + adapter\n")
    assert "perplexity on the held-out commits goes from 400.00 to 300.00 (-25.0%)" in text
    assert "better on 8 of 8 measured metrics" in text
    assert "| perplexity ↓ | 400.00 | 300.00 | -100.00 (better) | 1234 |" in text
    assert "| message ROUGE-L ↑ | 0.250 | 0.500 | +0.250 (better) | 10 |" in text
    assert "| behaviour pass rate ↑ | n/a | n/a | n/a | 0 |" in text
    assert "10 commit messages, 10 code changes and 0 behavioural tests" in text
    assert "| 60 | 3 | 7492 | 5.63 | n/a | 9087 |" in text
    assert "![loss curves](loss.png)" in text and "![metrics](metrics.png)" in text
    # Table cells: pipes escaped, HTML escaped, lines joined, empty text marked.
    assert "| subject | pass | fail: must_match '\\w' \\| found nothing |" in text
    assert (
        "Fix &lt;b&gt;parser&lt;/b&gt;<br><br>Body \\| with pipe | *(empty)* | Fix parser |" in text
    )


def test_same_value_is_reported_as_same():
    report = sample_report()
    report["metrics"]["commit_message.rouge_l"] = metric_entry(
        "commit_message.rouge_l", 0.5, 0.5 + 1e-9, 10
    )
    assert "| 0.500 | 0.500 | 0.000 (same) | 10 |" in markdown(report, "a.png", "b.png")


def test_plots_are_png_files_matplotlib_reads(tmp_path):
    log = tmp_path / "training_log.csv"
    log.write_text(
        "step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,peak_memory_mb,val_loss,micro_batch,"
        "accumulation\n10,1,5.9,1e-3,0.6,1280,1690,511,,2,1\n20,2,5.7,8e-4,0.5,2513,10986,511,"
        "5.8,2,1\n"
    )
    rows = read_training_log(log)
    assert rows[0]["val_loss"] is None and rows[1]["val_loss"] == 5.8
    for path, draw in (
        (tmp_path / "loss.png", lambda p: plot_loss_curves(rows, p)),
        (tmp_path / "empty_loss.png", lambda p: plot_loss_curves([], p)),
        (tmp_path / "metrics.png", lambda p: plot_metrics(sample_report()["metrics"], p, "t")),
    ):
        draw(path)
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100
    # Same numbers, same bytes: nothing version- or time-dependent in the file.
    plot_metrics(sample_report()["metrics"], tmp_path / "again.png", "t")
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "metrics.png").read_bytes()


def test_write_markdown_links_plots_relative_to_the_report(tmp_path):
    out = tmp_path / "eval"
    write_markdown(sample_report(), out / "report.md", out / "loss.png", tmp_path / "m.png")
    text = (out / "report.md").read_text()
    assert "![loss curves](loss.png)" in text and "![metrics](../m.png)" in text


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_has_a_direction_and_a_title(name):
    task, title, higher, fmt, bound = METRICS[name]
    assert (name.startswith(task) or task == "perplexity") and title and fmt.format(1.0)
    assert bound is None or (higher and bound > 0)
