"""Figures a reader would rather look at than read (matplotlib, no global pyplot state).

Each ablation draws its own figures (``figures`` in its module under ``emoface/ablations/``);
this module holds the shared drawing helpers and the baseline's figure. The rules every figure
keeps: a point estimate that has a confidence interval is drawn with it; one axis holds one
quantity (kappa, r, MAE and SD go to separate panels); every figure made from simulated data says
so in its title. Each figure is written twice, a PNG (for the report and the HTML report) and an
SVG beside it (vector, for the paper); both without date or software metadata, so identical data
give identical bytes (DVC can tell nothing changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import polars as pl
from matplotlib.figure import Figure

from emoface.analysis.common import AblationResult
from emoface.io import atomic_path

SIM_NOTE = "SIMULATED: describes the simulator, not a real model"


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and an SVG beside it (atomically, byte-stable for
    identical data); returns the PNG's path."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    # a fixed salt for the SVG's element ids and no date: identical data, identical bytes
    with matplotlib.rc_context({"svg.hashsalt": "emoface"}), \
            atomic_path(path.with_suffix(".svg")) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None, "Creator": None})
    return path


def new_figure(title: str, simulated: bool, ncols: int = 1, nrows: int = 1,
               width: float = 5.2, height: float = 3.8) -> tuple[Figure, list[Any]]:
    """A figure with ``nrows`` x ``ncols`` axes (returned row by row); the title says SIMULATED
    when the data are."""
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.suptitle(title + (f"\n{SIM_NOTE}" if simulated else ""), fontsize=8,
                 color="black")
    return fig, [ax for row in axes for ax in row]


def _yerr(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    # a bias-corrected interval need not contain the point estimate (degenerate samples): no
    # negative bar lengths; a missing bound draws no bar
    return [np.nan_to_num(np.clip(v - lo, 0, None)), np.nan_to_num(np.clip(hi - v, 0, None))]


def errorbars(ax: Any, labels: Sequence[str], values: Sequence[float], low: Sequence[float],
              high: Sequence[float], color: str = "C0", *, zero: float | None = 0.0,
              offset: float = 0.0, label: str | None = None, rotation: int = 30) -> None:
    """Point estimates with their CIs, one per label, around a reference line (``zero``)."""
    x = np.arange(len(labels)) + offset
    v, lo, hi = (np.asarray(a, float) for a in (values, low, high))
    ax.errorbar(x, v, yerr=_yerr(v, lo, hi), fmt="o", color=color, capsize=4, label=label)
    if zero is not None:
        ax.axhline(zero, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(labels)), list(labels), rotation=rotation,
                  ha="right" if rotation else "center", fontsize=7)


# what a paired-difference metric measures: one panel each (never two scales on one axis)
METRIC_PANELS = (("kappa", "Cohen's kappa"), ("r", "r with the human means"),
                 ("mae", "MAE (scale points)"), ("sd", "SD (scale points)"))


def metric_panel(metric: str) -> str:
    """The panel of a paired-difference metric: kappa, r, mae or sd (SDs of every grouping)."""
    if metric == "kappa":
        return "kappa"
    if metric.endswith("_r"):
        return "r"
    if metric.endswith("_mae"):
        return "mae"
    return "sd"


def paired_differences_figure(result: AblationResult, title: str, path: Path,
                              table: pl.DataFrame | None = None) -> Path:
    """Paired differences with bootstrap CIs: one row of panels per model (or contrast), one
    panel per quantity (kappa, r, MAE, SD), a zero line in each."""
    d = result.plots["paired_differences"] if table is None else table
    groups = d["model_id"].unique(maintain_order=True).to_list() if "model_id" in d.columns \
        else [None]
    d = d.with_columns(pl.col("metric").map_elements(metric_panel, return_dtype=pl.String)
                       .alias("panel"))
    panels = [(k, t) for k, t in METRIC_PANELS if k in set(d["panel"])]
    fig, axes = new_figure(title + " (paired bootstrap CIs)", result.simulated, len(panels),
                           len(groups), width=3.4, height=3.3)
    for gi, g in enumerate(groups):
        sub = d if g is None else d.filter(pl.col("model_id") == g)
        for pi, (key, ylabel) in enumerate(panels):
            ax = axes[gi * len(panels) + pi]
            p = sub.filter(pl.col("panel") == key)
            errorbars(ax, p["metric"], p["difference"], p["diff_low"], p["diff_high"])
            ax.set_ylabel(f"difference in {ylabel}", fontsize=7)
            ax.set_title(f"{g}: {key}" if g else key, fontsize=7)
    return save(fig, path)


def baseline_figures(result: AblationResult, folder: Path) -> list[Path]:
    """Agreement with CIs (kappa; r with the human means), and the within-category SD by model
    against the humans' (the collapse at a glance; the baseline computes no CI for an SD)."""
    m = result.tables["main"]
    fig, axes = new_figure("Baseline: agreement (95 % CIs) and within-category SD",
                           result.simulated, 3, width=4.2, height=3.9)
    errorbars(axes[0], m["model_id"], m["kappa"], m["kappa_low"], m["kappa_high"], zero=None,
              rotation=20)
    axes[0].set(ylabel="Cohen's kappa (6 x 6)", title="kappa")
    raters = m.filter(pl.col("valence_r").is_not_null())
    for i, f in enumerate(("valence", "arousal")):
        errorbars(axes[1], raters["model_id"], raters[f"{f}_r"], raters[f"{f}_r_low"],
                  raters[f"{f}_r_high"], color=f"C{i}", zero=None, offset=0.15 * (2 * i - 1),
                  label=f, rotation=20)
    axes[1].set(ylabel="r with the human means", title="r")
    axes[1].legend(fontsize=7)
    x = np.arange(raters.height)
    human = result.metrics["human_within_category_sd"]
    rater = result.metrics.get("human_single_rater_within_category_sd", {})
    for i, f in enumerate(("arousal", "valence")):
        axes[2].plot(x + 0.15 * (2 * i - 1), raters[f"{f}_within_category_sd"], "o",
                     color=f"C{i}", label=f"{f} (model)")
        if rater.get(f) is not None and np.isfinite(rater[f]):
            axes[2].axhline(rater[f], color=f"C{i}", ls="-", lw=1,
                            label=f"one human rater ({f})")
        axes[2].axhline(human[f], color=f"C{i}", ls="--", lw=1, label=f"human means ({f})")
    axes[2].set_xticks(x, raters["model_id"].to_list(), rotation=20, ha="right", fontsize=7)
    axes[2].set(ylabel="mean SD within a category (scale points)",
                title="within-category SD (no CI computed)")
    axes[2].legend(fontsize=6)
    for ax in axes:
        ax.title.set_fontsize(8)
    return [save(fig, folder / "within_category_sd.png")]


def figures_for(result: AblationResult, folder: Path) -> list[Path]:
    """Write the figure(s) of one result into ``folder``; returns the paths. The ablation's own
    module draws them (the baseline's included); an unknown id is an error (never a silent
    no-op)."""
    from emoface.ablations import get

    return get(result.ablation_id).figures(result, folder)
