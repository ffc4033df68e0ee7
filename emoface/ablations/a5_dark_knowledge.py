"""A5: dark knowledge. The digit distributions saved with the baseline run (no new calls)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import Ablation, baseline_only

if TYPE_CHECKING:
    from emoface.analysis.ablations import AblationResult
    from emoface.analysis.context import AnalysisContext


def analysis(ctx: AnalysisContext) -> AblationResult:
    from emoface.analysis.ablations import a5_dark_knowledge

    return a5_dark_knowledge(ctx)


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import numpy as np
    import polars as pl

    from emoface.analysis.figures import new_figure, save

    d = result.plots["entropy_by_category"].filter(pl.col("field") == "arousal")
    models = d["model_id"].unique(maintain_order=True).to_list()
    cats = sorted(d["category"].unique().to_list())
    fig, (ax,) = new_figure("A5: entropy of the arousal digit distribution by category",
                            result.simulated)
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        sub = {r["category"]: r["mean_entropy_nats"]
               for r in d.filter(pl.col("model_id") == model).iter_rows(named=True)}
        ax.bar(np.arange(len(cats)) + i * width, [sub.get(c, np.nan) for c in cats], width,
               label=model)
    ax.axhline(np.log(9), color="grey", ls="--", lw=.8, label="uniform (ln 9)")
    ax.set_xticks(np.arange(len(cats)) + width * (len(models) - 1) / 2, cats, fontsize=7)
    ax.set_ylabel("mean entropy (nats)")
    ax.legend(fontsize=7)
    return [save(fig, folder / "entropy_by_category.png")]


ABLATION = Ablation(
    id="A5", name="dark knowledge", priority=2, tiers=("minimal", "competitive", "complete",
                                                       "extended"),
    paper_section="Section 5.1",
    hypothesis="The digit distribution still discriminates inside a category even when the "
               "argmax does not.",
    interpretation="Entropy > 0 and expected ratings varying within a category => collapse is an "
                   "output-level effect.",
    planned_hours=1.0, needs="analysis of the baseline logits",
    work=baseline_only, analysis=analysis, figures=figures,
)
