"""The evaluation report: report.json for programs, report.md and PNG plots for people.

Everything here is a function of already computed numbers (no model), so the report can be
tested on hand-made inputs and rebuilt without rerunning a model.

``report.json`` (docs/data-contracts.md describes every key) holds ``primary_metric`` and
``metrics``: one entry per metric with ``base``, ``adapted``, ``delta`` (adapted - base),
``higher_is_better``, ``count`` (the items it was measured on), ``interval`` (95% paired BCa
intervals of base, adapted and delta resampled by commit, :mod:`repotune.evaluate.significance`),
``p`` and ``test`` (the bootstrap's p for means, the exact sign test's for 0/1 scores),
``role``, ``p_adjusted`` and ``verdict``, so a reader, or
:mod:`repotune.evaluate.comparison`, can say whether fine-tuning helped without knowing each
metric.

**One primary metric** (``evaluate.primary_metric``, per-commit bits per token by default: it
is measured on every held-out token, needs no generation and moves first when a model learns
the repository) is judged at p < 0.05 on its own, and its verdict leads the headline. Every
other measurement is **secondary**: its p is Holm-adjusted over the secondary measurements
that could get a verdict (enough commits, a finite p), so the chance of any spurious secondary
verdict stays at 5% however many metrics there are. Perplexity and bits per token are one
measurement (one is a function of the other): they share one p and count once. A metric that
a null answer can win (``EXPLORATORY_METRICS``: text similarity, checks of form) is
**exploratory**: its values, interval and p are shown, but it gets no verdict and is not in
the Holm family. Beside the table stand the **null baselines** (``null_baselines``): every
generated metric scored on the answers of four null models (:mod:`repotune.evaluate.null_models`).

A verdict is ``better`` or ``worse`` only when (:func:`repotune.evaluate.significance.decide`)
the (adjusted) p is below 0.05 and the delta's interval excludes zero *as printed* (both bounds
rounded to the metric's shown precision, the rounded delta itself non-zero with the same sign):
the report never prints ``0.00`` beside ``better``. Otherwise it is ``no clear difference``;
``too few to tell`` when fewer than ``MIN_SAMPLE`` commits were resampled or the test split
has fewer than ``MIN_SAMPLE`` commits (then the interval is printed but not believed); ``n/a``
when a value, an interval bound or a p is missing.
"""

import csv
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from repotune.atomic import atomic_path, write_text
from repotune.evaluate.sandbox import ENABLE_HINT
from repotune.evaluate.significance import (
    BETTER,
    BINARY,
    BOOTSTRAP_TEST,
    MEAN,
    MIN_TEST_COMMITS,
    MISSING,
    SIGN_TEST,
    TOO_FEW,
    UNCLEAR,
    WORSE,
    Paired,
    decide,
    holm,
    paired_means,
    sign_test,
)
from repotune.train.model_card import plain_value

VARIANTS = ("base", "adapted")


class Metric(NamedTuple):
    """How the report shows one metric."""

    task: str  # the evaluation task that measures it
    title: str  # its name in tables and plot titles
    higher_is_better: bool
    fmt: str  # format of a value, e.g. "{:.3f}"
    bound: float | None  # upper end of its scale (plots), or None when unbounded
    kind: str = MEAN  # BINARY: 0/1 per item, tested by the exact sign test


METRICS: dict[str, Metric] = {
    "perplexity": Metric("perplexity", "perplexity", False, "{:.2f}", None),
    "bits_per_token": Metric("perplexity", "bits per token", False, "{:.3f}", None),
    "commit_message.bnorm_bleu": Metric(
        "commit_message", "message B-Norm BLEU", True, "{:.2f}", 100
    ),
    "commit_message.rouge_l": Metric("commit_message", "message ROUGE-L", True, "{:.3f}", 1),
    "commit_message.edit_similarity": Metric(
        "commit_message", "message edit sim.", True, "{:.3f}", 1
    ),
    "commit_message.subject_exact_match": Metric(
        "commit_message", "subject exact", True, "{:.3f}", 1, BINARY
    ),
    "code_change.exact_match": Metric("code_change", "code exact match", True, "{:.3f}", 1, BINARY),
    "code_change.edit_similarity": Metric("code_change", "code edit sim.", True, "{:.3f}", 1),
    "fim.exact_match": Metric("fim", "FIM exact match", True, "{:.3f}", 1, BINARY),
    "fim.edit_similarity": Metric("fim", "FIM edit sim.", True, "{:.3f}", 1),
    "fim.parses": Metric("fim", "FIM parses (Python)", True, "{:.3f}", 1, BINARY),
    "behaviour.pass_rate": Metric("behaviour", "behaviour pass rate", True, "{:.3f}", 1, BINARY),
}
# The primary metric when the config names none (evaluate.primary_metric's default).
DEFAULT_PRIMARY = "bits_per_token"
PRIMARY, SECONDARY, EXPLORATORY = "primary", "secondary", "exploratory"
# Metrics a null answer wins (tests/test_null_models.py): text similarity (B-Norm BLEU, ROUGE-L,
# edit similarity) credits an echoed prompt or another commit's answer for shared words, and a
# check of form (FIM parses, the behavioural pattern tests) passes another commit's real answer.
# Their values, intervals and p are shown; they never get a verdict nor join the Holm family.
EXPLORATORY_METRICS = frozenset({
    "commit_message.bnorm_bleu", "commit_message.rouge_l", "commit_message.edit_similarity",
    "code_change.edit_similarity", "fim.edit_similarity", "fim.parses", "behaviour.pass_rate",
})  # fmt: skip
EXPLORATORY_REASON = (
    "Exploratory metrics get no verdict: a null answer (an echo of the prompt, random text or "
    "another commit's real answer) can win them, so a gain there does not show learning."
)
NOT_JUDGED = "no verdict (exploratory)"
# Metrics that are a function of another one: one measurement, counted once in the headline.
SAME_MEASUREMENT = {"bits_per_token": "perplexity"}
# What a metric's ``count`` counts.
ITEMS = {"perplexity": "tokens", "commit_message": "prompts", "code_change": "prompts",
         "fim": "questions", "behaviour": "diffs"}  # fmt: skip
COMMITS = "commits"  # what an interval resamples when each item's commit is known
# The fewest commits a verdict is given on (the test split's, and each metric's resampled).
MIN_SAMPLE = MIN_TEST_COMMITS
TRAINING_COLUMNS = (
    "steps", "epochs", "tokens", "final_train_loss", "final_val_loss", "tokens_per_s",
)  # fmt: skip
# PNG metadata would otherwise carry matplotlib's version: keep the bytes reproducible.
PNG_METADATA = {"Software": None}


def metric_entry(
    name: str,
    base: float | None,
    adapted: float | None,
    count: int,
    interval: Paired | None = None,
    enough_commits: bool = True,
    p: float | None = None,
    test: str = BOOTSTRAP_TEST,
    unit: str = COMMITS,
) -> dict[str, Any]:
    """One ``metrics`` entry: both values, their difference, its interval, p and the verdict
    as if this were the only test (:func:`assign_verdicts` applies the roles).

    ``interval`` is the paired bootstrap of this metric (None: not measured, no verdict);
    ``p`` the test's p-value (None: the bootstrap's own, ``interval.p``); ``unit`` what the
    interval resampled; ``enough_commits`` is False when the test split is too small for any
    verdict on it.
    """
    metric = METRICS[name]
    task = metric.task
    delta = None if base is None or adapted is None else adapted - base
    if p is None and interval is not None:
        p = interval.p
    entry: dict[str, Any] = {
        "task": task,
        "base": base,
        "adapted": adapted,
        "delta": delta,
        "higher_is_better": metric.higher_is_better,
        "count": count,
        "items": ITEMS[task],
        "unit": unit,
        "interval": None if interval is None else interval.as_dict(),
        "p": None if p is None or not math.isfinite(p) else p,
        "test": test,
    }
    entry["verdict"] = verdict(name, entry, enough_commits)
    return entry


def scored_entry(
    name: str,
    base: Sequence[float],
    adapted: Sequence[float],
    seed: int,
    commits: Sequence[str] | None = None,
    enough_commits: bool = True,
) -> dict[str, Any]:
    """The entry of a metric from each model's per-item scores (``commits[i]``: item ``i``'s
    commit, so items of one commit are resampled together; None: each item on its own): the
    mean of the items, the BCa interval, and the test of its kind (a 0/1 metric: the exact
    sign test)."""
    binary = METRICS[name].kind == BINARY
    interval = paired_means(base, adapted, seed, groups=commits)
    return metric_entry(
        name,
        _mean(base),
        _mean(adapted),
        len(base),
        interval,
        enough_commits,
        p=sign_test(base, adapted, commits) if binary and base else None,
        test=SIGN_TEST if binary else BOOTSTRAP_TEST,
        unit=COMMITS if commits is not None else ITEMS[METRICS[name].task],
    )


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if len(values) else None


def _shown(name: str, value: float) -> float:
    """``value`` rounded as the report prints it."""
    return float(METRICS[name].fmt.format(value))


def verdict(
    name: str, entry: Mapping[str, Any], enough_commits: bool = True, p_key: str = "p"
) -> str:
    """:func:`repotune.evaluate.significance.decide` on the entry's p (``p_key``: ``p`` or
    ``p_adjusted``) and its delta and interval as printed (the module docstring says why the
    rounding takes part)."""
    delta, interval = entry["delta"], entry.get("interval")
    if delta is None or not math.isfinite(delta) or interval is None:
        return MISSING
    bounds = [None if bound is None else _shown(name, bound) for bound in interval["delta"]]
    return decide(
        _shown(name, delta),
        bounds,
        entry.get(p_key),
        interval["n"],
        entry["higher_is_better"],
        enough_commits,
    )


def measurement_of(name: str) -> str:
    """The measurement a metric belongs to (bits per token: perplexity's)."""
    return SAME_MEASUREMENT.get(name, name)


def role_of(name: str, primary: str) -> str:
    """``primary`` for the primary metric's measurement, ``exploratory`` for a metric a null
    answer can win (``EXPLORATORY_METRICS``), else ``secondary``."""
    if measurement_of(name) == measurement_of(primary):
        return PRIMARY
    return EXPLORATORY if name in EXPLORATORY_METRICS else SECONDARY


def assign_verdicts(
    metrics: dict[str, dict[str, Any]], primary: str, enough_commits: bool = True
) -> dict[str, dict[str, Any]]:
    """Give every entry its ``role``, ``p_adjusted`` and final ``verdict``, in place.

    The primary metric's measurement (perplexity and bits per token together) keeps its p.
    The secondary measurements that could get a verdict (a finite p, enough commits) are
    Holm-adjusted together; the others cannot get one and their ``p_adjusted`` is None. An
    exploratory metric keeps its p, has no ``p_adjusted`` and its verdict is ``NOT_JUDGED``
    (``n/a`` when it has no value).
    """
    if primary not in METRICS or primary in EXPLORATORY_METRICS:
        judged = ", ".join(name for name in METRICS if name not in EXPLORATORY_METRICS)
        raise ValueError(f"primary metric {primary!r} is not one of {judged}")
    roles = {name: role_of(name, primary) for name in metrics}
    family = {
        measurement_of(name): entry["p"]
        for name, entry in metrics.items()
        if roles[name] == SECONDARY
        and entry.get("p") is not None
        and entry.get("verdict") not in (TOO_FEW, MISSING)
    }
    adjusted = holm(family)
    for name, entry in metrics.items():
        entry["role"] = roles[name]
        if roles[name] == EXPLORATORY:
            unmeasured = verdict(name, entry, enough_commits) == MISSING
            entry["p_adjusted"], entry["verdict"] = None, MISSING if unmeasured else NOT_JUDGED
            continue
        primary_p = roles[name] == PRIMARY
        entry["p_adjusted"] = entry.get("p") if primary_p else adjusted.get(measurement_of(name))
        entry["verdict"] = verdict(name, entry, enough_commits, "p_adjusted")
    return metrics


def format_value(name: str, value: float | None) -> str:
    """A metric value as the report prints it ("n/a" when there is none)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return METRICS[name].fmt.format(value)


def format_signed(name: str, value: float | None) -> str:
    """A difference as printed: ``+0.25``, ``-1.50``, and ``0.00`` (no sign) when it rounds to
    zero."""
    if value is None or not math.isfinite(value):
        return "n/a"
    shown = format_value(name, abs(value))
    if float(shown) == 0:
        return shown
    return ("+" if value > 0 else "-") + shown


def format_interval(name: str, entry: Mapping[str, Any]) -> str:
    """The delta's 95% interval as printed, ``[+0.10, +0.40]``; '' when there is none."""
    interval = entry.get("interval")
    if interval is None or entry["delta"] is None:
        return ""
    low, high = interval["delta"]
    return f"[{format_signed(name, low)}, {format_signed(name, high)}]"


def format_delta(name: str, entry: Mapping[str, Any]) -> str:
    """The delta with its 95% interval: ``+0.25 [+0.10, +0.40]``."""
    return " ".join(
        part for part in (format_signed(name, entry["delta"]), format_interval(name, entry)) if part
    )


def format_p(p: float | None) -> str:
    """A p-value as printed: three decimals, ``<0.001`` below, ``n/a`` when there is none."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_equals(label: str, p: float | None) -> str:
    """``p=0.013`` or ``p<0.001``."""
    shown = format_p(p)
    return f"{label}{shown}" if shown.startswith("<") else f"{label}={shown}"


def measurements(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Each measurement's verdict, a metric that derives from another (bits per token from
    perplexity) folded into it."""
    return {
        name: entry["verdict"]
        for name, entry in metrics.items()
        if name not in SAME_MEASUREMENT or SAME_MEASUREMENT[name] not in metrics
    }


def enough_test_commits(test_commits: int) -> bool:
    """Whether the test split is large enough for verdicts (``MIN_SAMPLE`` commits)."""
    return test_commits >= MIN_SAMPLE


def describe_base(record: Mapping[str, Any]) -> str:
    """The base as a reader needs to know it: built models are untrained."""
    if record.get("source") == "built":
        return "untrained (random initialisation)"
    return f"`{record.get('id', record.get('name', 'unknown'))}` (pretrained)"


def read_training_log(path: str | Path) -> list[dict[str, float | None]]:
    """``training_log.csv`` rows as numbers (an empty ``val_loss`` is None)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            {key: float(value) if value != "" else None for key, value in row.items()}
            for row in csv.DictReader(handle)
        ]


def _save(figure: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, metadata=PNG_METADATA)
    plt.close(figure)


def plot_loss_curves(rows: Sequence[Mapping[str, float | None]], path: str | Path) -> None:
    """Training loss per logged step and validation loss where it was measured, one PNG."""
    figure, axes = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    train = [(row["step"], row["loss"]) for row in rows if row.get("loss") is not None]
    validation = [(row["step"], row["val_loss"]) for row in rows if row.get("val_loss") is not None]
    if train:
        axes.plot(*zip(*train, strict=True), marker="o", markersize=3, label="training loss")
    if validation:
        axes.plot(*zip(*validation, strict=True), marker="s", label="validation loss")
    if not train and not validation:
        axes.text(0.5, 0.5, "no training log rows", ha="center", va="center")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title("Training and validation loss")
    axes.grid(alpha=0.3)
    if train or validation:
        axes.legend()
    _save(figure, path)


def plot_metrics(metrics: Mapping[str, Mapping[str, Any]], path: str | Path, title: str) -> None:
    """One small panel per metric, base and adapted side by side with their 95% intervals as
    whiskers and the verdict in the title: the metrics' scales differ (perplexity in the
    hundreds, rates in 0..1), so they do not share an axis."""
    names = [name for name in METRICS if name in metrics]
    columns = 3
    rows = max(1, math.ceil(len(names) / columns))
    figure, grid = plt.subplots(
        rows, columns, figsize=(3.2 * columns, 2.4 * rows), layout="constrained", squeeze=False
    )
    for axes, name in zip(grid.flat, names, strict=False):
        entry = metrics[name]
        values = [entry[variant] for variant in VARIANTS]
        heights = [value if value is not None else 0.0 for value in values]
        bars = axes.bar(VARIANTS, heights, color=["#9aa5b1", "#2b6cb0"])
        for bar, value in zip(bars, values, strict=True):
            axes.annotate(
                format_value(name, value),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        interval = entry.get("interval")
        for bar, variant, value in zip(bars, VARIANTS, values, strict=True):
            if interval is not None and value is not None and None not in interval[variant]:
                low, high = interval[variant]
                centre = bar.get_x() + bar.get_width() / 2
                whisker = [[max(value - low, 0.0)], [max(high - value, 0.0)]]
                axes.errorbar(centre, value, yerr=whisker, color="black", capsize=3, linewidth=1)
        arrow = "higher is better" if entry["higher_is_better"] else "lower is better"
        verdict_shown = entry.get("verdict", MISSING)
        axes.set_title(
            f"{METRICS[name].title}\n({arrow}, n={entry['count']}: {verdict_shown})", fontsize=9
        )
        bound = METRICS[name].bound
        if bound is not None:
            axes.set_ylim(0, bound * 1.15)
        else:
            axes.margins(y=0.2)
        axes.tick_params(labelsize=8)
    for axes in list(grid.flat)[len(names) :]:
        axes.set_visible(False)
    figure.suptitle(title)
    _save(figure, path)


def _cell(text: str, limit: int = 400) -> str:
    """Text for a Markdown table cell: pipes escaped, lines joined with <br>, long text cut."""
    text = text.strip()
    if len(text) > limit:
        text = text[:limit] + " …"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"


def _headline(report: Mapping[str, Any]) -> str:
    """The answer in one paragraph: the primary metric's verdict first, then the secondary
    ones counted; only verdicts, always with n."""
    metrics = report["metrics"]
    commits = report["samples"]["test_commits"]
    parts = [f"On n={commits} held-out test commits, {_primary_sentence(report)}"]
    if not enough_test_commits(commits):
        parts.append(
            f"The held-out test split has only n={commits} commits, too few to tell whether "
            f"the adapter helps (a verdict needs at least {MIN_SAMPLE}): the numbers below "
            "carry no verdict. For more test commits, raise `curate.split.test_size` (a "
            f"fraction of the history, or a count of at least {MIN_SAMPLE} commits) or run "
            "on a longer history."
        )
    else:
        secondary = {
            name: said
            for name, said in measurements(metrics).items()
            if metrics[name].get("role", SECONDARY) == SECONDARY
        }
        counts = Counter(secondary.values())
        judged = counts[BETTER] + counts[WORSE] + counts[UNCLEAR]
        parts[-1] += (
            f" Secondary, Holm-adjusted: of {judged} measurements the adapter is better on "
            f"{counts[BETTER]}, worse on {counts[WORSE]}, with no clear difference on "
            f"{counts[UNCLEAR]}"
        )
        if counts[TOO_FEW]:
            parts[-1] += f"; {counts[TOO_FEW]} more had too few commits to tell"
        parts[-1] += " (perplexity and bits per token count as one)."
        exploratory = sum(entry.get("role") == EXPLORATORY for entry in metrics.values())
        if exploratory:
            parts[-1] += f" {exploratory} exploratory metrics get no verdict."
    base = report.get("base")
    if base and base.get("source") == "built":
        parts.append(
            "The base is untrained (random initialisation): this compares an untrained model "
            "with a trained one, so a gain shows that training worked, not that fine-tuning "
            "a pretrained model helps."
        )
    return " ".join(parts)


def _primary_sentence(report: Mapping[str, Any]) -> str:
    """The primary metric, both values, the change with its interval, p and the verdict."""
    name = report.get("primary_metric", DEFAULT_PRIMARY)
    title = METRICS[name].title
    entry = report["metrics"].get(name)
    if entry is None or entry["delta"] is None:
        return f"the primary metric, {title}, was not measured."
    base, adapted = (format_value(name, entry[key]) for key in VARIANTS)
    interval = format_interval(name, entry)
    change = f"change {interval}, " if interval else ""
    n = entry["interval"]["n"] if entry.get("interval") else entry["count"]
    return (
        f"the primary metric, {title}, goes from {base} to {adapted} with the adapter "
        f"({change}{p_equals('p', entry.get('p'))}, n={n} {entry.get('unit', '')}): "
        f"**{entry['verdict']}**."
    )


def _base_line(report: Mapping[str, Any]) -> str:
    """What the base is; for a built base, training's note says which of it was trained too."""
    base = report.get("base")
    shown = describe_base(base) if base else f"`{report['base_model']}`"
    note = report["training"].get("base_training")
    if note and base and base.get("source") == "built":
        shown = note
    return f"Base model {shown}"


def markdown(report: Mapping[str, Any], loss_plot: str, metrics_plot: str) -> str:
    """report.md: the answer first, then the numbers, the plots, behaviour tests and examples."""
    samples = report["samples"]
    training = report["training"]
    lines = [
        f"# Evaluation of {report['model']}: base vs base + adapter",
        "",
        _headline(report),
        "",
        f"{_base_line(report)}, adapter `{report['adapter']}`, template "
        f"`{report['template']}`, decoding "
        f"{'sampled' if report['generation']['do_sample'] else 'greedy'}. Held-out test split: "
        f"{samples['test_commits']} commits; evaluated on {samples['perplexity_blocks']} blocks "
        f"({samples['perplexity_tokens']} tokens of {samples.get('perplexity_commits', 'n/a')} "
        f"commits) for perplexity, {samples['commit_messages']} "
        f"commit messages, {samples['code_changes']} code changes, "
        f"{_fim_sample(report)} and {samples['behaviour_tests']} behavioural tests.",
        "",
        "Deltas are adapted - base with their 95% BCa bootstrap interval, resampling held-out "
        "commits (the same commits for both models, a commit's items together, seeded). p is "
        "the bootstrap's for means and the exact sign test's (McNemar's with one item per "
        "commit) for 0/1 metrics. The primary metric "
        f"({METRICS[report.get('primary_metric', DEFAULT_PRIMARY)].title}) is judged at "
        "p < 0.05; the secondary ones at Holm-adjusted p < 0.05. A verdict says better or worse "
        "only when p is below 0.05 and the interval, as printed, excludes zero, and needs at "
        f"least {MIN_SAMPLE} commits, in the test split and resampled.",
        "",
        "| metric | role | base | adapted | delta [95% interval] | p | Holm p | verdict | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["metrics"].items():
        arrow = "↑" if entry["higher_is_better"] else "↓"
        role = entry.get("role", SECONDARY)
        adjusted = "" if role == PRIMARY else _holm_cell(entry)
        lines.append(
            f"| {METRICS[name].title} {arrow} | {role} | {format_value(name, entry['base'])} | "
            f"{format_value(name, entry['adapted'])} | {format_delta(name, entry)} | "
            f"{_p_cell(entry)} | {adjusted} | {entry.get('verdict', MISSING)} | "
            f"{_sample(entry)} |"
        )
    if any(entry.get("role") == EXPLORATORY for entry in report["metrics"].values()):
        lines += ["", EXPLORATORY_REASON]
    lines += _fim_facts_line(report.get("fim", {}))
    lines += _null_section(report.get("null_baselines", {}))
    lines += [
        "",
        f"![metrics]({metrics_plot})",
        "",
        "## Training",
        "",
        "| steps | epochs | tokens | final train loss | final validation loss | tokens/s |",
        "|---|---|---|---|---|---|",
        "| " + " | ".join(plain_value(training.get(key)) for key in TRAINING_COLUMNS) + " |",
        "",
        *_epoch_note(training),
        f"![loss curves]({loss_plot})",
        "",
    ]
    lines += _finish_section(report["generation"].get("tasks", {}))
    lines += _behaviour_section(report["behaviour"], report.get("behaviour_by_kind", {}))
    lines += _examples_section(report["examples"])
    return "\n".join(lines) + "\n"


def _null_section(baselines: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """The null baselines table: each generated metric's value on each null model's answers."""
    if not baselines:
        return []
    models = list(next(iter(baselines.values())))
    lines = [
        "",
        "Null baselines: each generated metric scored, by the same code, on answers that know "
        "nothing: `empty` (no answer), `echo` (the prompt's text), `random` (uniformly random "
        "tokens, the same token budget) and `other_reference` (another commit's real answer, "
        "a seeded derangement). A model's value means little unless it beats all four.",
        "",
        "| metric | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for name, values in baselines.items():
        cells = " | ".join(format_value(name, values[model]) for model in models)
        lines.append(f"| {METRICS[name].title} | {cells} |")
    return lines


def _epoch_note(training: Mapping[str, Any]) -> list[str]:
    """Lines saying, when training stopped short of one epoch, how much of the split it saw."""
    epochs, drawn, blocks = (training.get(k) for k in ("epochs", "blocks_drawn", "train_blocks"))
    if not isinstance(epochs, (int, float)) or epochs >= 1 or drawn is None or blocks is None:
        return []
    return [
        f"Training stopped at **{epochs:.2f} of an epoch**: {drawn} block draws over {blocks} "
        "training blocks, so much of the training split was never seen (`train.max_steps` "
        "capped it).",
        "",
    ]


def _fim_sample(report: Mapping[str, Any]) -> str:
    """The fill-in-the-middle questions asked, and in which format (or that none were)."""
    fim = report.get("fim", {})
    if not fim.get("evaluated"):
        return "no fill-in-the-middle questions (evaluate.fim.enabled is false)"
    fmt = fim["format"]
    how = f"the `{fmt}` FIM format" if fmt else "a plain continuation of the prefix (no FIM tokens)"
    count = report["samples"]["fim_questions"]
    return f"{count} fill-in-the-middle questions ({fim['python_questions']} Python) asked in {how}"


def _count(facts: Mapping[str, Any], hits: str) -> str:
    return f"{facts[hits]} of {facts['n']}"


def _fim_facts_line(fim: Mapping[str, Any]) -> list[str]:
    """What the FIM metrics can tell: blank answers, and where parsing needs an answer."""
    if "empty_middle_parses" not in fim:
        return []
    empty = fim["empty_middle_parses"]
    per_variant = "; ".join(
        f"{name} {_count(fim[name]['empty_answers'], 'empty')} blank, "
        f"{_count(fim[name]['parses_in_file'], 'parsing')} parse"
        for name in VARIANTS
    )
    return [
        "",
        f"FIM: left empty, the middle parses in {_count(empty, 'parsing')} Python questions, "
        "so `FIM parses` is measured on the others only (a blank answer never parses). Over "
        f"all of them: {per_variant}.",
    ]


def _counted(count: int, unit: str) -> str:
    """``3 commits``, ``1 commit``: the units are plurals in ``s`` (commits, questions, ...)."""
    return f"{count} {unit[:-1] if count == 1 and unit.endswith('s') else unit}".strip()


def _sample(entry: Mapping[str, Any]) -> str:
    """``26 commits (5012 tokens)``: what was resampled, and the items measured."""
    interval = entry.get("interval")
    items = _counted(entry["count"], entry.get("items", ""))
    if interval is None:
        return items
    unit = entry.get("unit", COMMITS)
    if unit == entry.get("items"):
        return items
    return f"{_counted(interval['n'], unit)} ({items})"


def _holm_cell(entry: Mapping[str, Any]) -> str:
    """A secondary metric's Holm-adjusted p; a dash when it was not in the family (no verdict
    possible: too few commits, no value)."""
    adjusted = entry.get("p_adjusted")
    return "-" if adjusted is None else format_p(adjusted)


def _p_cell(entry: Mapping[str, Any]) -> str:
    """The p-value and, for 0/1 metrics, that it is the exact test's."""
    p = format_p(entry.get("p"))
    return f"{p} (exact)" if entry.get("test") == SIGN_TEST and p != "n/a" else p


def _finish_section(tasks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """How each generation ended: by itself (end of text, a stop string) or at the limit.

    The columns are the finish reasons the stage counted (all of
    :data:`repotune.inference.decoding.FINISH_REASONS`, zeros included)."""
    reasons: list[str] = []
    for facts in tasks.values():
        for name in VARIANTS:
            reasons += [reason for reason in facts[name]["finish"] if reason not in reasons]
    lines = [
        "## How generations ended",
        "",
        "A generation that hits the token limit (`length`) did not finish by itself: its text is "
        "cut, not complete.",
        "",
        "| task | model | token limit | " + " | ".join(reasons) + " | hit the limit |",
        "|---|---|---|" + "---|" * len(reasons) + "---|",
    ]
    for task, facts in tasks.items():
        for name in VARIANTS:
            finish = facts[name]["finish"]
            total = sum(finish.values())
            limit = finish.get("length", 0)
            share = f"{limit} of {total}" if total else "n/a"
            lines.append(
                f"| {task} | {name} | {facts['max_new_tokens']} | "
                + " | ".join(str(finish.get(reason, 0)) for reason in reasons)
                + f" | {share} |"
            )
    return [*lines, ""]


def _behaviour_section(
    results: Sequence[Mapping[str, Any]], by_kind: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    lines = ["## Behavioural tests", ""]
    if not results:
        return [*lines, "No behavioural tests were run.", ""]
    if by_kind:
        lines += ["| kind | tests | base pass rate | adapted pass rate |", "|---|---|---|---|"]
        for kind, rates in by_kind.items():
            shown = [format_value("behaviour.pass_rate", rates[name]) for name in VARIANTS]
            lines.append(f"| {kind} | {rates['count']} | {shown[0]} | {shown[1]} |")
        lines.append("")
    lines += [
        "A test on diffs checks the commit message written for each sampled held-out diff; a "
        "test with a prompt of its own is one sample and gets no verdict. Random text: the "
        "pattern test's pass rate on uniformly random tokens ended as the model's answers end "
        "(same token budget and stop strings), what the test can tell apart from chance.",
        "",
        "| test | base | adapted | random text | n | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        cells = [_outcome(result[variant]) for variant in VARIANTS]
        random = format_value("behaviour.pass_rate", result.get("random_text"))
        n = f"{result['base']['n']} diffs" if result.get("sample") == "diffs" else "1 prompt"
        lines.append(
            f"| {_cell(result['name'])} | {cells[0]} | {cells[1]} | {random} | {n} | "
            f"{result.get('verdict', MISSING)} |"
        )
    if any(result[variant].get("skipped") for result in results for variant in VARIANTS):
        lines += ["", f"Python tests were skipped: code execution is not enabled ({ENABLE_HINT})."]
    return [*lines, ""]


def _outcome(check: Mapping[str, Any]) -> str:
    if "rate" in check:  # a test on diffs: its passes over them
        shown = format_value("behaviour.pass_rate", check["rate"])
        return f"{check['passed']} of {check['n']} ({shown})"
    if check.get("skipped"):
        return _cell(check["reason"])
    return "pass" if check["passed"] else "fail: " + _cell(check["reason"])


def _examples_section(examples: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Test commits side by side", ""]
    if not examples:
        return [*lines, "No commit messages were generated.", ""]
    for example in examples:
        lines += [
            f"### `{example['sha'][:12]}`",
            "",
            "| real message | base model | adapted model |",
            "|---|---|---|",
            f"| {_cell(example['reference'])} | {_cell(example['base'])} | "
            f"{_cell(example['adapted'])} |",
            "",
        ]
    return lines


def write_markdown(
    report: Mapping[str, Any], path: str | Path, loss_plot: str | Path, metrics_plot: str | Path
) -> None:
    """Write report.md; the plots are linked relative to it."""
    folder = Path(path).resolve().parent
    loss, metrics = (Path(plot).resolve() for plot in (loss_plot, metrics_plot))
    write_text(
        path,
        markdown(report, os.path.relpath(loss, folder), os.path.relpath(metrics, folder)),
    )
