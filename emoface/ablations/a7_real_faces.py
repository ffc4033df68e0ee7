"""A7: real faces. The baseline protocol on the real-face set (``real_faces`` in params.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import BASELINE, Ablation, WorkItem, baseline_items, predictions

if TYPE_CHECKING:
    from emoface.analysis.ablations import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(
        params, (*models, *params.models.fer), [BASELINE], stimulus_set=params.real_faces.name)


def analysis(ctx: AnalysisContext) -> AblationResult:
    from emoface.analysis.ablations import a7_real_faces

    return a7_real_faces(ctx)


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import errorbars, new_figure, save

    d = result.plots["ai_vs_real"]
    fig, (ax,) = new_figure("A7: kappa on AI vs real faces (bootstrap CIs)", result.simulated)
    labels = [f"{m}\n{f}" for m, f in zip(d["model_id"], d["faces"], strict=True)]
    errorbars(ax, labels, d["kappa"], d["kappa_boot_low"], d["kappa_boot_high"])
    return [save(fig, folder / "ai_vs_real.png")]


ABLATION = Ablation(
    id="A7", name="real faces", priority=3, tiers=("complete", "extended"), paper_section="OOD",
    hypothesis="Part of the effects come from AI-generated faces being out of distribution.",
    interpretation="Metrics that differ between AI and real faces => an out-of-distribution "
                   "effect.",
    planned_hours=6.0, needs="baseline protocol on a real-face set, VLMs + FER",
    work=work, analysis=analysis, figures=figures,
)
