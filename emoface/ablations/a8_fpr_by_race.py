"""A8: false-positive rate of "angry" by race. Analysis of the baseline predictions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import Ablation, baseline_only

if TYPE_CHECKING:
    from emoface.analysis.ablations import AblationResult
    from emoface.analysis.context import AnalysisContext


def analysis(ctx: AnalysisContext) -> AblationResult:
    from emoface.analysis.ablations import a8_fpr_by_race

    return a8_fpr_by_race(ctx)


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import errorbars, new_figure, save

    d = result.plots["fpr_by_race"]
    fig, (ax,) = new_figure("A8: share of non-angry faces labelled angry (Wilson CIs)",
                            result.simulated)
    labels = [f"{m}\n{r}" for m, r in zip(d["model_id"], d["race"], strict=True)]
    errorbars(ax, labels, d["fpr"], d["fpr_low"], d["fpr_high"], color="C3")
    ax.set_ylabel("false-positive rate of 'angry'")
    return [save(fig, folder / "fpr_by_race.png")]


ABLATION = Ablation(
    id="A8", name="FPR by race", priority=3, tiers=("minimal", "complete", "extended"),
    paper_section="Section 4.5",
    hypothesis="Angry is over-attributed to one race group among faces that are not angry.",
    interpretation="FPR(Black) > FPR(Korean) => real over-attribution, not an accuracy gap.",
    planned_hours=0.5, needs="analysis of the baseline predictions",
    work=baseline_only, analysis=analysis, figures=figures,
)
