"""The evaluation report: report.json for programs, report.md and PNG plots for people.

Everything here is a function of already computed numbers (no model), so the report can be
tested on hand-made inputs and rebuilt without rerunning a model.

``report.json`` (docs/data-contracts.md describes every key) holds ``metrics``: one entry per
metric with ``base``, ``adapted``, ``delta`` (adapted - base), ``higher_is_better`` and
``count`` (the sample it was measured on), so a reader, or :mod:`repotune.evaluate.comparison`, can
say whether fine-tuning helped without knowing each metric.
"""

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from repotune.atomic import atomic_path, write_text
from repotune.train.model_card import plain_value

VARIANTS = ("base", "adapted")
# name -> (task, title, higher is better, format, upper bound of its scale or None)
METRICS: dict[str, tuple[str, str, bool, str, float | None]] = {
    "perplexity": ("perplexity", "perplexity", False, "{:.2f}", None),
    "bits_per_token": ("perplexity", "bits per token", False, "{:.3f}", None),
    "commit_message.bnorm_bleu": ("commit_message", "message B-Norm BLEU", True, "{:.2f}", 100),
    "commit_message.rouge_l": ("commit_message", "message ROUGE-L", True, "{:.3f}", 1),
    "commit_message.edit_similarity": ("commit_message", "message edit sim.", True, "{:.3f}", 1),
    "commit_message.subject_exact_match": ("commit_message", "subject exact", True, "{:.3f}", 1),
    "code_change.exact_match": ("code_change", "code exact match", True, "{:.3f}", 1),
    "code_change.edit_similarity": ("code_change", "code edit sim.", True, "{:.3f}", 1),
    "behaviour.pass_rate": ("behaviour", "behaviour pass rate", True, "{:.3f}", 1),
}
TRAINING_COLUMNS = (
    "steps", "epochs", "tokens", "final_train_loss", "final_val_loss", "tokens_per_s",
)  # fmt: skip
# PNG metadata would otherwise carry matplotlib's version: keep the bytes reproducible.
PNG_METADATA = {"Software": None}


def metric_entry(
    name: str, base: float | None, adapted: float | None, count: int
) -> dict[str, Any]:
    """One ``metrics`` entry: both values, their difference and what "better" means."""
    task, _, higher, _, _ = METRICS[name]
    delta = None if base is None or adapted is None else adapted - base
    return {
        "task": task,
        "base": base,
        "adapted": adapted,
        "delta": delta,
        "higher_is_better": higher,
        "count": count,
    }


def improved(entry: Mapping[str, Any]) -> bool | None:
    """Whether the adapter did better on this metric (None without a delta, False on a tie)."""
    delta = entry["delta"]
    if delta is None:
        return None
    return delta > 0 if entry["higher_is_better"] else delta < 0


def format_value(name: str, value: float | None) -> str:
    """A metric value as the report prints it ("n/a" when there is none)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return METRICS[name][3].format(value)


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
    """One small panel per metric, base and adapted side by side: the metrics' scales differ
    (perplexity in the hundreds, rates in 0..1), so they do not share an axis."""
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
        arrow = "higher is better" if entry["higher_is_better"] else "lower is better"
        axes.set_title(f"{METRICS[name][1]}\n({arrow}, n={entry['count']})", fontsize=9)
        bound = METRICS[name][4]
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


def _delta(name: str, entry: Mapping[str, Any]) -> str:
    delta = entry["delta"]
    if delta is None:
        return "n/a"
    sign = "+" if delta >= 0 else "-"
    shown = format_value(name, abs(delta))
    if float(shown) == 0:
        return f"{shown} (same)"
    verdict = " (better)" if improved(entry) else " (worse)"
    return f"{sign}{shown}{verdict}"


def _headline(report: Mapping[str, Any]) -> str:
    metrics = report["metrics"]
    parts = []
    ppl = metrics.get("perplexity")
    if ppl and ppl["delta"] is not None and ppl["base"]:
        change = 100 * ppl["delta"] / ppl["base"]
        base, adapted = (format_value("perplexity", ppl[key]) for key in VARIANTS)
        parts.append(
            f"perplexity on the held-out commits goes from {base} to {adapted} ({change:+.1f}%)"
        )
    measured = [entry for entry in metrics.values() if entry["delta"] is not None]
    better = sum(improved(entry) is True for entry in measured)
    parts.append(f"the adapter is better on {better} of {len(measured)} measured metrics")
    return "With the adapter, " + "; ".join(parts) + "."


def markdown(report: Mapping[str, Any], loss_plot: str, metrics_plot: str) -> str:
    """report.md: the answer first, then the numbers, the plots, behaviour tests and examples."""
    samples = report["samples"]
    training = report["training"]
    lines = [
        f"# Evaluation of {report['model']}: base vs base + adapter",
        "",
        _headline(report),
        "",
        f"Base model `{report['base_model']}` ({training.get('base_training') or 'pretrained'}), "
        f"adapter `{report['adapter']}`, template "
        f"`{report['template']}`, decoding "
        f"{'sampled' if report['generation']['do_sample'] else 'greedy'}. Held-out test split: "
        f"{samples['test_commits']} commits; evaluated on {samples['perplexity_blocks']} blocks "
        f"({samples['perplexity_tokens']} tokens) for perplexity, {samples['commit_messages']} "
        f"commit messages, {samples['code_changes']} code changes and "
        f"{samples['behaviour_tests']} behavioural tests.",
        "",
        "| metric | base | adapted | delta | n |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["metrics"].items():
        arrow = "↑" if entry["higher_is_better"] else "↓"
        lines.append(
            f"| {METRICS[name][1]} {arrow} | {format_value(name, entry['base'])} | "
            f"{format_value(name, entry['adapted'])} | {_delta(name, entry)} | {entry['count']} |"
        )
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
        f"![loss curves]({loss_plot})",
        "",
    ]
    lines += _behaviour_section(report["behaviour"])
    lines += _examples_section(report["examples"])
    return "\n".join(lines) + "\n"


def _behaviour_section(results: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Behavioural tests", ""]
    if not results:
        return [*lines, "No behavioural tests were run.", ""]
    lines += ["| test | base | adapted |", "|---|---|---|"]
    for result in results:
        cells = [
            ("pass" if result[variant]["passed"] else "fail: " + _cell(result[variant]["reason"]))
            for variant in VARIANTS
        ]
        lines.append(f"| {_cell(result['name'])} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


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
