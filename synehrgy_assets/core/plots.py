"""Evaluation plots from AGGREGATE tables only (see `metrics.EvaluationReport.tables`).

Each function returns PNG bytes and, given `path`, also writes them there. Figures are built with
the object-oriented API on an Agg canvas, so no global pyplot state or display is involved.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from synehrgy_assets.core.metrics import EvaluationReport, MetricError

REAL_COLOR, SYNTHETIC_COLOR, TEST_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c"


def _png(fig: Figure, path: str | Path | None) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    data = buffer.getvalue()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def _require(table: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"plot input '{name}' lacks column(s) {missing}; expected {columns}")


def plot_marginal_histograms(hist: pd.DataFrame, path: str | Path | None = None, ncols: int = 6) -> bytes:
    """Grid of per-variable value distributions, real train vs synthetic (binned fractions)."""
    _require(hist, ["variable", "label", "kind", "unit", "bin", "bin_label", "left", "right",
                    "real_fraction", "synthetic_fraction"], "marginal_histograms")
    variables = list(dict.fromkeys(hist["variable"]))
    if not variables:
        raise ValueError("plot input 'marginal_histograms' is empty; nothing to plot")
    nrows = math.ceil(len(variables) / ncols)
    fig = Figure(figsize=(3.4 * ncols, 2.7 * nrows), dpi=80, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, variable in zip(axes, variables):
        part = hist[hist["variable"] == variable].sort_values("bin")
        first = part.iloc[0]
        if first["kind"] == "categorical":
            x = np.arange(len(part))
            ax.bar(x - 0.2, part["real_fraction"], width=0.4, color=REAL_COLOR, label="real train")
            ax.bar(x + 0.2, part["synthetic_fraction"], width=0.4, color=SYNTHETIC_COLOR, label="synthetic")
            ax.set_xticks(x, part["bin_label"], fontsize=7)
        else:
            edges = np.r_[part["left"].to_numpy(), part["right"].to_numpy()[-1]]
            ax.stairs(part["real_fraction"].to_numpy(), edges, color=REAL_COLOR, fill=True, alpha=0.45,
                      label="real train")
            ax.stairs(part["synthetic_fraction"].to_numpy(), edges, color=SYNTHETIC_COLOR, linewidth=1.6,
                      label="synthetic")
        ax.set_title(str(first["label"]), fontsize=9)
        ax.set_xlabel(str(first["unit"]), fontsize=8)
        ax.set_ylabel("fraction of values", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(variables):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right")
    # The axes are the table's: k-anonymous quantiles (fidelity.marginal_histograms), never a raw extreme.
    fig.suptitle("Measurement value distributions (all rows; continuous bins span the real 0.5–99.5th pct., "
                 "each over >= 10 patients)")
    return _png(fig, path)


def plot_code_prevalence(prevalence: pd.DataFrame, path: str | Path | None = None,
                         pearson: float | None = None) -> bytes:
    """Scatter of per-visit code prevalence, one point per CODE, real (x) vs synthetic (y)."""
    _require(prevalence, ["code", "code_type", "prevalence_real", "prevalence_synthetic"], "code_prevalence")
    if prevalence.empty:
        raise ValueError("plot input 'code_prevalence' is empty; nothing to plot")
    positive = np.r_[prevalence["prevalence_real"], prevalence["prevalence_synthetic"]]
    positive = positive[positive > 0]
    floor = positive.min() / 2 if len(positive) else 1e-4  # codes absent on one side sit on the floor
    fig = Figure(figsize=(6.5, 6), dpi=100, layout="constrained")
    ax = fig.subplots()
    for code_type, color in (("diagnosis", REAL_COLOR), ("procedure", SYNTHETIC_COLOR)):
        part = prevalence[prevalence["code_type"] == code_type]
        ax.scatter(np.maximum(part["prevalence_real"], floor), np.maximum(part["prevalence_synthetic"], floor),
                   s=9, alpha=0.5, color=color, label=f"{code_type} codes (n={len(part)})")
    ax.plot([floor, 1], [floor, 1], color="grey", linestyle="--", linewidth=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("real train prevalence (fraction of visits)")
    ax.set_ylabel("synthetic prevalence (fraction of visits)")
    title = "ICD-9 code prevalence per visit"
    if pearson is not None:
        title += f" (Pearson r = {pearson:.3f})"
    ax.set_title(title + f"\nabsent codes drawn at {floor:.1e}", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig, path)


def plot_distance_histograms(distances: pd.DataFrame, path: str | Path | None = None) -> bytes:
    """Nearest-real-train-record distance distributions: synthetic→train vs test→train."""
    _require(distances, ["space", "group", "left", "right", "fraction"], "privacy_distance_histograms")
    spaces = list(dict.fromkeys(distances["space"]))
    if not spaces:
        raise ValueError("plot input 'privacy_distance_histograms' is empty; nothing to plot")
    xlabels = {"features": "Euclidean distance (standardized with real-train statistics)",
               "codes": "Jaccard distance between visit code sets"}
    fig = Figure(figsize=(6 * len(spaces), 4.2), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(spaces)))
    for ax, space in zip(axes, spaces):
        for group, color, label in (("synthetic_to_train", SYNTHETIC_COLOR, "synthetic → closest real train"),
                                    ("test_to_train", TEST_COLOR, "real test → closest real train (baseline)")):
            part = distances[(distances["space"] == space) & (distances["group"] == group)]
            if part.empty:
                continue
            edges = np.r_[part["left"].to_numpy(), part["right"].to_numpy()[-1]]
            ax.stairs(part["fraction"].to_numpy(), edges, color=color, linewidth=1.8, label=label)
        ax.set_xlabel(xlabels.get(space, "distance"))
        ax.set_ylabel("fraction of records")
        ax.set_title(f"Distance to closest record ({space})")
        ax.legend(fontsize=8)
    return _png(fig, path)


def plot_utility(metrics: Mapping[str, float | MetricError], path: str | Path | None = None) -> bytes:
    """Bars of TRTR vs TSTR AUROC and AUPRC on the real test set, with chance levels.

    Accepts `report.metrics` (keys `utility/...`) or the dict from `mortality_utility`.
    """
    def get(key: str):
        value = metrics.get(f"utility/{key}", metrics.get(key))
        return None if value is None or isinstance(value, MetricError) else float(value)

    fig = Figure(figsize=(6.5, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    x = np.arange(2)
    for offset, prefix, color, label in ((-0.2, "trtr", REAL_COLOR, "train real, test real (TRTR)"),
                                         (0.2, "tstr", SYNTHETIC_COLOR, "train synthetic, test real (TSTR)")):
        values = [get(f"{prefix}_auroc"), get(f"{prefix}_auprc")]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(x + offset, heights, width=0.4, color=color, label=label)
        for bar, v in zip(bars, values):
            text = f"{v:.3f}" if v is not None else "n/a"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8)
    ax.hlines(0.5, -0.45, 0.45, colors="grey", linestyles="--", label="chance")
    prevalence = get("test_positive_rate")
    if prevalence is not None:
        ax.hlines(prevalence, 0.55, 1.45, colors="grey", linestyles="--")
    ax.set_xticks(x, ["AUROC", "AUPRC"])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score on real test set")
    ax.set_title("In-hospital mortality prediction utility")
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig, path)


def report_plots(report: EvaluationReport) -> dict[str, bytes]:
    """PNG bytes of every plot the report's tables allow, by name."""
    plots: dict[str, bytes] = {}
    tables = report.tables
    if "marginal_histograms" in tables and not tables["marginal_histograms"].empty:
        plots["marginal_histograms"] = plot_marginal_histograms(tables["marginal_histograms"])
    if "code_prevalence" in tables and not tables["code_prevalence"].empty:
        plots["code_prevalence"] = plot_code_prevalence(
            tables["code_prevalence"], pearson=report.metrics.get("fidelity/code_prevalence_pearson"))
    if "privacy_distance_histograms" in tables and not tables["privacy_distance_histograms"].empty:
        plots["privacy_distances"] = plot_distance_histograms(tables["privacy_distance_histograms"])
    if any(k.startswith("utility/") for k in report.metrics):
        plots["utility"] = plot_utility(report.metrics)
    return plots


def write_report_plots(report: EvaluationReport, out_dir: str | Path) -> dict[str, Path]:
    """Write every plot of `report_plots` as `<out_dir>/<name>.png`; returns name → path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, png in report_plots(report).items():
        written[name] = out_dir / f"{name}.png"
        written[name].write_bytes(png)
    return written
