"""Figures a reader would rather look at than read (matplotlib, PNG, no global pyplot state).

Each ablation draws its own figures (``figures`` in its module under ``emoface/ablations/``);
this module holds the shared drawing helpers and the baseline's figure. Every figure made from
simulated data says so in its title. PNGs are written without the "Software" metadata so
identical data give identical bytes (DVC can tell nothing changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from emoface.analysis.ablations import AblationResult
from emoface.io import atomic_path

SIM_NOTE = "SIMULATED: describes the simulator, not a real model"


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically, byte-stable for identical data)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    return path


def new_figure(title: str, simulated: bool, ncols: int = 1) -> tuple[Figure, list[Any]]:
    """A figure with ``ncols`` axes in a row; the title says SIMULATED when the data are."""
    fig = Figure(figsize=(5.2 * ncols, 3.8))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    fig.suptitle(title + (f"\n{SIM_NOTE}" if simulated else ""), fontsize=8,
                 color="black")
    return fig, list(axes)


def errorbars(ax: Any, labels: Sequence[str], values: Sequence[float], low: Sequence[float],
              high: Sequence[float], color: str = "C0") -> None:
    """Point estimates with their CIs, one per label, around a zero line."""
    x = np.arange(len(labels))
    v, lo, hi = (np.asarray(a, float) for a in (values, low, high))
    # a bias-corrected interval need not contain the point estimate (degenerate samples): no
    # negative bar lengths
    ax.errorbar(x, v, yerr=[np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)], fmt="o",
                color=color, capsize=4)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)


def paired_differences_figure(result: AblationResult, title: str, path: Path) -> Path:
    """Paired differences with bootstrap CIs, one panel per model when the table has models."""
    d = result.plots["paired_differences"]
    groups = d["model_id"].unique(maintain_order=True).to_list() if "model_id" in d.columns \
        else [None]
    fig, axes = new_figure(title + " (paired bootstrap CIs)", result.simulated, len(groups))
    for ax, g in zip(axes, groups, strict=True):
        sub = d if g is None else d.filter(pl.col("model_id") == g)
        errorbars(ax, sub["metric"], sub["difference"], sub["diff_low"], sub["diff_high"])
        ax.set_title(g or "", fontsize=8)
    return save(fig, path)


def baseline_figures(result: AblationResult, folder: Path) -> list[Path]:
    """Within-category SD by model against the humans' (the collapse at a glance)."""
    m = result.tables["main"]
    fig, (ax,) = new_figure("Within-category SD by model (arousal, valence)", result.simulated)
    x = np.arange(m.height)
    ax.bar(x - 0.2, m["arousal_within_category_sd"], 0.4, label="arousal")
    ax.bar(x + 0.2, m["valence_within_category_sd"], 0.4, label="valence")
    human = result.metrics["human_within_category_sd"]
    rater = result.metrics.get("human_single_rater_within_category_sd", {})
    for i, f in enumerate(("arousal", "valence")):
        if rater.get(f) is not None and np.isfinite(rater[f]):
            ax.axhline(rater[f], color=f"C{i}", ls="-", lw=1, label=f"one human rater ({f})")
        ax.axhline(human[f], color=f"C{i}", ls="--", lw=1, label=f"human means ({f})")
    ax.set_xticks(x, m["model_id"], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("mean SD within a category")
    ax.legend(fontsize=7)
    return [save(fig, folder / "within_category_sd.png")]


def figures_for(result: AblationResult, folder: Path) -> list[Path]:
    """Write the figure(s) of one result into ``folder``; returns the paths. The ablation's own
    module draws them; an unknown id is an error (never a silent no-op)."""
    if result.ablation_id == "baseline":
        return baseline_figures(result, folder)
    from emoface.ablations import get

    return get(result.ablation_id).figures(result, folder)
