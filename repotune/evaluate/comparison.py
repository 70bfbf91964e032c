"""The model comparison matrix: every configured model on every metric, side by side.

Each model's ``report.json`` (:mod:`repotune.evaluate.report`) already compares it with its own
base; this puts the models next to each other, so a user choosing between, say, tiny and
StarCoder2-3B sees one table instead of building it by hand: a row per metric, a column per
model holding the adapted value, its change from that model's base with the change's 95% paired
BCa interval (resampled by commit), its p-value and verdict (:mod:`repotune.evaluate.report`:
the primary metric's p as is, the secondary metrics' Holm-adjusted), and the sample size; the
best adapted value in bold. The primary metric's row is marked. A model whose test split is too
small for verdicts is marked in its column header and named below the table.
With one model configured the table has one column: the same file, so the workflow's outputs do
not depend on how many models there are.
"""

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from repotune.atomic import atomic_path, write_text
from repotune.errors import InputError
from repotune.evaluate.report import (
    DEFAULT_PRIMARY,
    EXPLORATORY,
    EXPLORATORY_METRICS,
    METRICS,
    MIN_SAMPLE,
    MISSING,
    PNG_METADATA,
    SECONDARY,
    enough_test_commits,
    format_delta,
    format_value,
    p_equals,
)

BASE_BAR, ADAPTED_BAR = ("base", "#9aa5b1"), ("adapted", "#2b6cb0")


def load_reports(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The evaluation reports, in the order given (the config's model order)."""
    reports = []
    for path in paths:
        try:
            reports.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(str(path), f"cannot be read ({error})", "rerun evaluate") from None
    return reports


def _value(report: Mapping[str, Any], name: str, key: str) -> float | None:
    entry = report["metrics"].get(name)
    value = None if entry is None else entry[key]
    return value if value is not None and math.isfinite(value) else None


def best_model(reports: Sequence[Mapping[str, Any]], name: str) -> str | None:
    """The model with the best adapted value of metric ``name`` (None when no model has one or
    several tie for it)."""
    values = [(r["model"], _value(r, name, "adapted")) for r in reports]
    values = [(model, value) for model, value in values if value is not None]
    if not values:
        return None
    pick = max if METRICS[name].higher_is_better else min
    best = pick(value for _, value in values)
    winners = [model for model, value in values if value == best]
    return winners[0] if len(winners) == 1 else None


def _sample_facts(entry: Mapping[str, Any]) -> dict[str, Any]:
    interval = entry.get("interval")
    return {
        "count": entry.get("count", 0),
        "interval": None if interval is None else interval["delta"],
        "n": None if interval is None else interval["n"],
        "unit": entry.get("unit"),
        "role": entry.get("role"),
        "p": entry.get("p") if entry.get("role") == EXPLORATORY else entry.get("p_adjusted"),
        "verdict": entry.get("verdict", MISSING),
    }


def too_small(report: Mapping[str, Any]) -> int | None:
    """The test split's commit count when it is too small for verdicts, else None."""
    commits = report.get("samples", {}).get("test_commits")
    return commits if commits is not None and not enough_test_commits(commits) else None


def matrix(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric: per model its base, adapted value, delta and count, and the best."""
    rows = []
    for name in METRICS:
        if not any(name in report["metrics"] for report in reports):
            continue
        rows.append(
            {
                "metric": name,
                "higher_is_better": METRICS[name].higher_is_better,
                "best": best_model(reports, name),
                "models": {
                    report["model"]: {
                        key: _value(report, name, key) for key in ("base", "adapted", "delta")
                    }
                    | _sample_facts(report["metrics"].get(name, {}))
                    for report in reports
                },
            }
        )
    return rows


def _header(report: Mapping[str, Any]) -> str:
    small = too_small(report)
    mark = "" if small is None else f" (too few test commits: {small})"
    return f"`{report['model']}`{mark}"


def primary_metrics(reports: Sequence[Mapping[str, Any]]) -> list[str]:
    """The primary metrics the reports declare, each once, in model order."""
    return list(dict.fromkeys(r.get("primary_metric", DEFAULT_PRIMARY) for r in reports))


def markdown(reports: Sequence[Mapping[str, Any]], plot: str) -> str:
    """comparison.md: the matrix (adapted value, change from its base with its 95% interval,
    p and verdict, sample size) and which models' test splits are too small to tell."""
    models = [report["model"] for report in reports]
    primary = primary_metrics(reports)
    lines = [
        "# Model comparison",
        "",
        f"{len(models)} model(s), each evaluated on the same held-out commits with and without "
        "its adapter. Each cell: the adapted model's value; in brackets its change from the "
        "model's own base, the change's 95% paired BCa interval (resampling commits), p and the "
        "verdict (better or worse only when p < 0.05 and the interval excludes zero); then the "
        "sample size. The best adapted value is in bold. Primary metric: "
        + ", ".join(METRICS[name].title for name in primary)
        + " (`evaluate.primary_metric`), judged on its own p; the exploratory metrics show "
        "their p but get no verdict (a null answer can win them); every other metric is "
        'secondary and its p ("Holm p") is Holm-adjusted over the secondary metrics.',
        "",
        "| metric | " + " | ".join(_header(report) for report in reports) + " |",
        "|---|" + "---|" * len(models),
    ]
    for row in matrix(reports):
        name = row["metric"]
        cells = []
        for model in models:
            cell = row["models"][model]
            value = format_value(name, cell["adapted"])
            if model == row["best"]:
                value = f"**{value}**"
            entry = {"delta": cell["delta"]}
            if cell["interval"] is not None:
                entry["interval"] = {"delta": cell["interval"]}
            change = format_delta(name, entry)
            n = cell["count"] if cell["n"] is None else f"{cell['n']} {cell['unit'] or ''}".strip()
            p = p_equals("Holm p" if cell["role"] == SECONDARY else "p", cell["p"])
            cells.append(f"{value} ({change}; {p}; {cell['verdict']}), n={n}")
        arrow = "↑" if row["higher_is_better"] else "↓"
        mark = " (primary)" if name in primary else ""
        if name in EXPLORATORY_METRICS:
            mark = " (exploratory)"
        lines.append(f"| {METRICS[name].title} {arrow}{mark} | " + " | ".join(cells) + " |")
    small = [(report["model"], too_small(report)) for report in reports]
    small = [(model, commits) for model, commits in small if commits is not None]
    if small:
        lines += [""] + [
            f"`{model}`: its test split has only {commits} commits, fewer than the {MIN_SAMPLE} "
            "a verdict needs: too few to tell whether its adapter helps. Raise "
            "`curate.split.test_size` or use a longer history."
            for model, commits in small
        ]
    lines += ["", f"![comparison]({plot})", ""]
    return "\n".join(lines)


def plot(reports: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """One panel per metric; per model a pair of bars, its base and its adapted value."""
    rows = matrix(reports)
    models = [report["model"] for report in reports]
    columns = 3
    height = max(1, math.ceil(len(rows) / columns))
    figure, grid = plt.subplots(
        height,
        columns,
        figsize=(3.4 * columns, 2.6 * height),
        layout="constrained",
        squeeze=False,
    )
    width = 0.38
    positions = range(len(models))
    for axes, row in zip(grid.flat, rows, strict=False):
        name = row["metric"]
        for offset, key, color in (
            (-width / 2, "base", "#9aa5b1"),
            (width / 2, "adapted", "#2b6cb0"),
        ):
            values = [row["models"][model][key] for model in models]
            axes.bar(
                [p + offset for p in positions],
                [value if value is not None else 0.0 for value in values],
                width,
                label=key,
                color=color,
            )
        axes.set_xticks(list(positions), models, fontsize=8, rotation=20)
        arrow = "higher is better" if row["higher_is_better"] else "lower is better"
        axes.set_title(f"{METRICS[name].title}\n({arrow})", fontsize=9)
        bound = METRICS[name].bound
        if bound is not None:
            axes.set_ylim(0, bound * 1.15)
        axes.tick_params(labelsize=8)
    for axes in list(grid.flat)[len(rows) :]:
        axes.set_visible(False)
    if rows:
        grid.flat[0].legend(fontsize=8)
    figure.suptitle("Models: base vs base + adapter")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, metadata=PNG_METADATA)
    plt.close(figure)


def compare(
    report_paths: Sequence[str | Path], table_path: str | Path, plot_path: str | Path
) -> None:
    """Write comparison.md and its plot from the models' report.json files."""
    reports = load_reports(report_paths)
    plot(reports, plot_path)
    link = os.path.relpath(Path(plot_path).resolve(), Path(table_path).resolve().parent)
    write_text(table_path, markdown(reports, link))
