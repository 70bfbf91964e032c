"""report.md, report.json's metric entries and the PNG plots, from hand-made numbers."""

import random
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from repotune.config import resolve_config
from repotune.errors import InputError
from repotune.evaluate.report import (
    BETTER,
    DEFAULT_PRIMARY,
    EXPLORATORY,
    EXPLORATORY_METRICS,
    EXPLORATORY_REASON,
    METRICS,
    MIN_SAMPLE,
    NOT_JUDGED,
    PRIMARY,
    SECONDARY,
    TOO_FEW,
    UNCLEAR,
    WORSE,
    assign_verdicts,
    describe_base,
    format_p,
    format_value,
    markdown,
    measurements,
    metric_entry,
    plot_loss_curves,
    plot_metrics,
    read_training_log,
    scored_entry,
    write_markdown,
)
from repotune.evaluate.significance import BINARY, MISSING, SIGN_TEST, Paired

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def paired(delta: tuple[float, float], n: int = 50, p: float | None = None) -> Paired:
    """An interval as the bootstrap reports it (only the delta's and p matter for verdicts; by
    default p agrees with the interval: small when it excludes zero)."""
    if p is None:
        p = 0.001 if delta[0] > 0 or delta[1] < 0 else 0.5
    return Paired(base=(0.0, 1.0), adapted=(0.0, 1.0), delta=delta, n=n, resamples=2000, p=p)


def sample_report(test_commits: int = 120) -> dict:
    enough = test_commits >= MIN_SAMPLE
    metrics = {
        name: metric_entry(name, 0.25, 0.5, 40, paired((0.1, 0.4), 40), enough) for name in METRICS
    }
    metrics["perplexity"] = metric_entry(
        "perplexity", 400.0, 300.0, 1234, paired((-130.0, -70.0), 60), enough
    )
    metrics["bits_per_token"] = metric_entry(
        "bits_per_token", 8.64, 8.23, 1234, paired((-0.5, -0.3), 60), enough
    )
    metrics["commit_message.rouge_l"] = metric_entry(
        "commit_message.rouge_l", 0.30, 0.32, 40, paired((-0.01, 0.05), 40), enough
    )
    metrics["behaviour.pass_rate"] = metric_entry("behaviour.pass_rate", None, None, 0)
    assign_verdicts(metrics, "bits_per_token", enough)
    return {
        "model": "tiny",
        "primary_metric": "bits_per_token",
        "base_model": "results/tiny/base",
        "base": {"source": "built", "name": "tiny",
                 "description": "untrained (random initialisation)"},
        "adapter": "results/tiny/adapter",
        "template": "plain",
        "samples": {
            "test_commits": test_commits,
            "perplexity_blocks": 60,
            "perplexity_commits": 60,
            "perplexity_tokens": 1234,
            "commit_messages": 40,
            "code_changes": 40,
            "fim_questions": 40,
            "behaviour_tests": 0,
        },
        "fim": {"evaluated": True, "format": "plain", "python_questions": 30},
        "metrics": metrics,
        "null_baselines": {"commit_message.rouge_l": {
            "empty": 0.0, "echo": 0.12, "random": 0.01, "other_reference": 0.2}},
        "generation": {"do_sample": False, "tasks": {
            "commit_message": {"max_new_tokens": 64,
                               "base": {"finish": {"eos": 0, "stop": 1, "length": 39}},
                               "adapted": {"finish": {"eos": 25, "stop": 10, "length": 5}}},
        }},
        "training": {"steps": 60, "epochs": 3, "tokens": 7492, "final_train_loss": 5.63,
                     "final_val_loss": None, "tokens_per_s": 9086.8},
        "behaviour": [
            {"name": "subject", "base": {"passed": True, "reason": "ok"},
             "adapted": {"passed": False, "reason": "must_match '\\w' | found nothing"}},
        ],
        "behaviour_by_kind": {"pattern": {"count": 1, "base": 1.0, "adapted": 0.0}},
        "examples": [
            {"sha": "a" * 40, "reference": "Fix <b>parser</b>\n\nBody | with pipe",
             "base": "", "adapted": "Fix parser"},
        ],
    }  # fmt: skip


def test_metric_entry_delta_direction_and_verdict():
    lower = metric_entry("perplexity", 400.0, 300.0, 5, paired((-120.0, -80.0)))
    assert (lower["delta"], lower["higher_is_better"], lower["verdict"]) == (-100.0, False, BETTER)
    higher = metric_entry("code_change.exact_match", 0.5, 0.25, 5, paired((-0.4, -0.1)))
    assert (higher["delta"], higher["verdict"]) == (-0.25, WORSE)
    assert higher["interval"]["delta"] == [-0.4, -0.1] and higher["unit"] == "commits"
    assert higher["items"] == "prompts" and higher["p"] == 0.001
    missing = metric_entry("behaviour.pass_rate", None, 0.5, 0)
    assert missing["delta"] is None and missing["verdict"] == "n/a"
    assert format_value("perplexity", None) == "n/a" == format_value("perplexity", float("nan"))
    assert format_value("commit_message.bnorm_bleu", 12.345) == "12.35"


def test_an_interval_containing_zero_gives_no_clear_difference():
    entry = metric_entry("commit_message.rouge_l", 0.30, 0.34, 40, paired((-0.02, 0.09)))
    assert entry["verdict"] == UNCLEAR == "no clear difference"
    ppl = metric_entry("perplexity", 400.0, 300.0, 900, paired((-250.0, 10.0)))
    assert ppl["verdict"] == UNCLEAR


def test_a_verdict_needs_enough_items_and_enough_test_commits():
    assert metric_entry("perplexity", 4.0, 3.0, 9, paired((-1.2, -0.8), n=29))["verdict"] == TOO_FEW
    assert metric_entry("perplexity", 4.0, 3.0, 9, paired((-1.2, -0.8), n=30))["verdict"] == BETTER
    few_commits = metric_entry("perplexity", 4.0, 3.0, 9, paired((-1.2, -0.8)), False)
    assert few_commits["verdict"] == TOO_FEW


def test_a_difference_that_rounds_to_zero_is_no_clear_difference():
    # The review's case: B-Norm 5.5e-77 vs 2.9e-77, every resample positive, printed 0.00.
    entry = metric_entry(
        "commit_message.bnorm_bleu", 2.9e-77, 5.5e-77, 100, paired((1e-77, 4e-77), 100)
    )
    assert entry["verdict"] == UNCLEAR
    row = next(line for line in markdown(report_with(entry), "a", "b").splitlines()
               if line.startswith("| message B-Norm BLEU"))  # fmt: skip
    # B-Norm BLEU is exploratory: shown with its p, never judged.
    assert "| 0.00 [0.00, 0.00] | 0.001 | - | no verdict (exploratory) | 100 commits" in row


def report_with(entry: dict) -> dict:
    return report_with_metric("commit_message.bnorm_bleu", entry)


@pytest.mark.parametrize("name", list(METRICS))
def test_rounding_shown_and_verdict_agree(name):
    """On many random entries: a printed better/worse has a non-zero printed delta of the right
    sign and a printed interval that excludes zero; a printed interval that excludes zero and
    contains the printed delta is never 'no clear difference'."""
    rng = random.Random(name)
    for _ in range(300):
        scale = 10 ** rng.uniform(-6, 2)
        base = rng.uniform(0, 1) * scale
        delta = rng.gauss(0, 1) * scale
        spread = abs(rng.gauss(0, 1)) * scale
        low, high = sorted((delta - spread * rng.random(), delta + spread * rng.random()))
        entry = metric_entry(name, base, base + delta, 50, paired((low, high), 50))
        report = sample_report()
        report["metrics"] = {name: entry}
        row = next(line for line in markdown(report, "a", "b").splitlines()
                   if line.startswith(f"| {METRICS[name][1]} "))  # fmt: skip
        _, _, _, _, shown, _, _, said, _ = row.strip("| ").split(" | ")
        point, interval = shown.split(" ", 1)
        low_shown, high_shown = (float(bound) for bound in interval.strip("[]").split(", "))
        assert said == entry["verdict"]
        up = float(point) > 0
        if said in (BETTER, WORSE):
            assert float(point) != 0 and (low_shown > 0 or high_shown < 0)
            assert (said == BETTER) == (up == entry["higher_is_better"])
        elif low_shown <= float(point) <= high_shown and float(point) != 0:
            assert said == UNCLEAR and (low_shown <= 0 <= high_shown)


def test_markdown_answers_first_with_verdicts_and_n():
    text = markdown(sample_report(), "loss.png", "metrics.png")
    assert text.startswith("# Evaluation of tiny: base vs base + adapter\n")
    headline = text.split("\n")[2]
    # The primary metric's verdict leads, with its interval, p and commit-level n.
    assert headline.startswith(
        "On n=120 held-out test commits, the primary metric, bits per token, goes from 8.640 "
        "to 8.230 with the adapter (change [-0.500, -0.300], p=0.001, n=60 commits): "
        "**better**. Secondary, Holm-adjusted: "
    )
    # 12 metrics: perplexity and bits per token one (primary) measurement, 7 exploratory
    # (a null answer can win them), 3 secondary exact matches judged.
    assert (
        "of 3 measurements the adapter is better on 3, worse on 0, with no clear difference on 0"
        " (perplexity and bits per token count as one). 7 exploratory metrics get no verdict."
        in headline
    )
    assert "The base is untrained (random initialisation)" in headline
    assert "Base model untrained (random initialisation), adapter" in text
    assert (
        "| perplexity ↓ | primary | 400.00 | 300.00 | -100.00 [-130.00, -70.00] | 0.001 |  | "
        "better | 60 commits (1234 tokens) |" in text
    )
    assert (
        "| message ROUGE-L ↑ | exploratory | 0.300 | 0.320 | +0.020 [-0.010, +0.050] | 0.500 | "
        "- | no verdict (exploratory) | 40 commits (40 prompts) |" in text
    )
    assert EXPLORATORY_REASON in text
    # Three secondary p-values of 0.001: Holm multiplies the smallest by 3.
    assert (
        "| code exact match ↑ | secondary | 0.250 | 0.500 | +0.250 [+0.100, +0.400] | 0.001 | "
        "0.003 | better | 40 commits (40 prompts) |" in text
    )
    assert (
        "| behaviour pass rate ↑ | exploratory | n/a | n/a | n/a | n/a | - | n/a | 0 diffs |"
        in text
    )
    # The null baselines, metric by null model, beside the metrics table.
    assert "| metric | empty | echo | random | other_reference |" in text
    assert "| message ROUGE-L | 0.000 | 0.120 | 0.010 | 0.200 |" in text
    assert "(1234 tokens of 60 commits) for perplexity" in text
    assert (
        "40 commit messages, 40 code changes, 40 fill-in-the-middle questions (30 Python) asked "
        "in the `plain` FIM format and 0 behavioural tests"
    ) in text
    assert "| 60 | 3 | 7492 | 5.63 | n/a | 9087 |" in text
    assert "![loss curves](loss.png)" in text and "![metrics](metrics.png)" in text
    # How generations ended: the token limit is reported per task and model.
    assert "| commit_message | base | 64 | 0 | 1 | 39 | 39 of 40 |" in text
    assert "| commit_message | adapted | 64 | 25 | 10 | 5 | 5 of 40 |" in text
    assert "| pattern | 1 | 1.000 | 0.000 |" in text
    # Table cells: pipes escaped, HTML escaped, lines joined, empty text marked.
    assert "| subject | pass | fail: must_match '\\w' \\| found nothing |" in text
    assert (
        "Fix &lt;b&gt;parser&lt;/b&gt;<br><br>Body \\| with pipe | *(empty)* | Fix parser |" in text
    )


def test_a_count_of_one_is_singular():
    """What was measured reads as English for any count: one commit, one question."""
    report = sample_report()
    report["metrics"]["fim.parses"] = metric_entry(
        "fim.parses", 0.0, 1.0, 1, paired((0.0, 1.0), 1), True
    )
    text = markdown(report, "loss.png", "metrics.png")
    row = next(line for line in text.splitlines() if line.startswith("| FIM parses"))
    assert row.endswith("| 1 commit (1 question) |"), row


def test_training_short_of_an_epoch_is_said_in_words():
    """150 steps of 8 blocks over 6,928 blocks: the report says 0.17 of an epoch, and the
    table holds the fraction, not the planned whole epoch."""
    report = sample_report()
    report["training"] |= {"steps": 150, "epochs": 0.1732, "blocks_drawn": 1200,
                           "train_blocks": 6928}  # fmt: skip
    text = markdown(report, "loss.png", "metrics.png")
    assert "| 150 | 0.1732 | 7492 |" in text
    assert "Training stopped at **0.17 of an epoch**: 1200 block draws over 6928" in text
    assert "of an epoch" not in markdown(sample_report(), "loss.png", "metrics.png")


def test_a_small_test_split_is_called_too_small_to_tell():
    text = markdown(sample_report(test_commits=2), "loss.png", "metrics.png")
    headline = text.split("\n")[2]
    # The primary metric still leads, with its values and commit-level n, but no verdict.
    assert headline.startswith(
        "On n=2 held-out test commits, the primary metric, bits per token, goes from 8.640 to "
        "8.230 with the adapter (change [-0.500, -0.300], p=0.001, n=60 commits): "
        "**too few to tell**. The held-out test split has only n=2 commits, too few to tell"
    )
    assert "`curate.split.test_size`" in headline and "longer history" in headline
    assert "better on" not in headline
    assert "| too few to tell |" in text and "| better |" not in text


def test_base_is_described_by_what_it_is():
    assert describe_base({"source": "built", "name": "tiny"}) == "untrained (random initialisation)"
    pretrained = {"source": "pretrained", "name": "sc2", "id": "bigcode/starcoder2-3b"}
    assert describe_base(pretrained) == "`bigcode/starcoder2-3b` (pretrained)"
    report = sample_report()
    report["base"] = pretrained | {"description": describe_base(pretrained)}
    text = markdown(report, "a", "b")
    assert "Base model `bigcode/starcoder2-3b` (pretrained)" in text and "untrained" not in text


def test_measurements_count_perplexity_and_bits_per_token_once():
    metrics = sample_report()["metrics"]
    assert "bits_per_token" not in measurements(metrics) and "perplexity" in measurements(metrics)
    assert len(measurements(metrics)) == len(METRICS) - 1


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
    task, title, higher, fmt, bound, kind = METRICS[name]
    assert (name.startswith(task) or task == "perplexity") and title and fmt.format(1.0)
    assert bound is None or (higher and bound > 0)
    # 0/1 metrics (exact matches, pass rates, parses) take the exact sign test.
    assert (kind == BINARY) == any(word in name for word in ("exact", "pass", "parses"))


def test_p_above_alpha_gives_no_verdict_even_when_the_interval_excludes_zero():
    entry = metric_entry("commit_message.rouge_l", 0.3, 0.4, 40, paired((0.05, 0.15), p=0.07))
    assert entry["verdict"] == UNCLEAR
    assert (
        metric_entry("commit_message.rouge_l", 0.3, 0.4, 40, paired((0.05, 0.15), p=0.01))[
            "verdict"
        ]
        == BETTER
    )
    nan = metric_entry("commit_message.rouge_l", 0.3, 0.4, 40, paired((float("nan"), 0.15)))
    assert nan["verdict"] == MISSING and nan["interval"]["delta"] == [None, 0.15]
    assert "[n/a, +0.150]" in markdown(report_with_metric("commit_message.rouge_l", nan), "a", "b")


def report_with_metric(name: str, entry: dict) -> dict:
    """The sample report with one entry replaced, judged again."""
    report = sample_report()
    report["metrics"][name] = entry
    assign_verdicts(report["metrics"], report["primary_metric"])
    return report


def test_secondary_metrics_are_holm_adjusted_and_the_primary_is_not():
    """Ten metrics each at p = 0.02: alone each would be 'better'. The primary keeps p = 0.02
    and its verdict; the two secondary exact matches' Holm-adjusted p is 2 * 0.02 = 0.04; the
    seven exploratory metrics (a null answer can win them) keep p but get no verdict and are
    not in the Holm family (else it would be 9 * 0.02 = 0.18)."""
    metrics = {
        name: metric_entry(name, 0.3, 0.4, 40, paired((0.05, 0.15), p=0.02))
        for name in METRICS
        if METRICS[name].task != "perplexity"
    }
    assert all(entry["verdict"] == BETTER for entry in metrics.values())
    assign_verdicts(metrics, "fim.exact_match")
    assert metrics["fim.exact_match"]["role"] == PRIMARY
    assert metrics["fim.exact_match"]["p_adjusted"] == 0.02
    assert metrics["fim.exact_match"]["verdict"] == BETTER
    secondary = {name for name, entry in metrics.items() if entry["role"] == SECONDARY}
    assert secondary == {"commit_message.subject_exact_match", "code_change.exact_match"}
    assert {round(metrics[name]["p_adjusted"], 12) for name in secondary} == {0.04}
    assert {metrics[name]["verdict"] for name in secondary} == {BETTER}
    exploratory = {name for name, entry in metrics.items() if entry["role"] == EXPLORATORY}
    assert exploratory == EXPLORATORY_METRICS
    assert {metrics[name]["verdict"] for name in exploratory} == {NOT_JUDGED}
    assert {(metrics[name]["p"], metrics[name]["p_adjusted"]) for name in exploratory} == {
        (0.02, None)
    }
    with pytest.raises(ValueError, match="primary metric 'loss' is not one of"):
        assign_verdicts(metrics, "loss")
    with pytest.raises(ValueError, match=r"primary metric .fim\.edit_similarity. is not one of"):
        assign_verdicts(metrics, "fim.edit_similarity")


def test_perplexity_and_bits_per_token_are_one_primary_measurement():
    metrics = {
        "perplexity": metric_entry("perplexity", 400.0, 300.0, 900, paired((-130.0, -70.0))),
        "bits_per_token": metric_entry("bits_per_token", 8.6, 8.2, 900, paired((-0.5, -0.3))),
        "code_change.exact_match": metric_entry(
            "code_change.exact_match", 0.3, 0.4, 40, paired((0.05, 0.15), p=0.03)
        ),
    }
    assign_verdicts(metrics, "bits_per_token")
    assert metrics["perplexity"]["role"] == metrics["bits_per_token"]["role"] == PRIMARY
    # The only secondary measurement: Holm over one test changes nothing.
    assert metrics["code_change.exact_match"]["p_adjusted"] == 0.03
    assert metrics["code_change.exact_match"]["verdict"] == BETTER


def test_metrics_below_the_gate_are_not_counted_in_the_holm_family():
    metrics = {
        "bits_per_token": metric_entry("bits_per_token", 8.6, 8.2, 900, paired((-0.5, -0.3))),
        "code_change.exact_match": metric_entry(
            "code_change.exact_match", 0.3, 0.4, 40, paired((0.05, 0.15), p=0.03)
        ),
        "fim.exact_match": metric_entry(
            "fim.exact_match", 0.3, 0.4, 9, paired((0.05, 0.15), n=9, p=0.03)
        ),
    }
    assign_verdicts(metrics, "bits_per_token")
    assert metrics["fim.exact_match"]["verdict"] == TOO_FEW
    assert metrics["fim.exact_match"]["p_adjusted"] is None  # not in the family
    assert metrics["code_change.exact_match"]["p_adjusted"] == 0.03


def test_a_scored_entry_takes_the_exact_test_for_0_1_metrics():
    base, adapted = [0.0] * 30, [1.0] * 4 + [0.0] * 26  # 4 wins, 0 losses
    entry = scored_entry("code_change.exact_match", base, adapted, seed=0)
    assert (entry["p"], entry["test"], entry["verdict"]) == (0.125, SIGN_TEST, UNCLEAR)
    assert entry["interval"]["delta"][0] > 0 and entry["unit"] == "prompts"
    shas = [f"{i:040x}" for i in range(30)]
    grouped = scored_entry("code_change.exact_match", base, adapted, 0, shas)
    assert grouped["unit"] == "commits" and grouped["interval"]["n"] == 30
    row = next(
        line
        for line in markdown(
            report_with_metric("code_change.exact_match", entry), "a", "b"
        ).splitlines()
        if line.startswith("| code exact match")
    )
    assert "| 0.125 (exact) |" in row
    assert format_p(0.0004) == "<0.001" and format_p(None) == "n/a"


def test_the_configs_primary_metric_is_one_of_the_reports_metrics():
    """evaluate.primary_metric's allowed values are exactly the metrics the report can judge,
    and its default is the report's."""
    schema = yaml.safe_load((Path(__file__).parent.parent / "config" / "schema.yaml").read_text())
    key = schema["properties"]["evaluate"]["properties"]["primary_metric"]
    assert sorted(key["enum"]) == sorted(set(METRICS) - EXPLORATORY_METRICS)
    assert key["default"] == DEFAULT_PRIMARY == resolve_config({})["evaluate"]["primary_metric"]
    with pytest.raises(InputError, match="primary_metric"):
        resolve_config({"evaluate": {"primary_metric": "loss"}})
