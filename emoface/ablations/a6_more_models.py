"""A6: more VLMs. The baseline protocol on the extra models of ``ablations.A6.models``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import BASELINE, Ablation, WorkItem, baseline_items, predictions
from emoface.config import A6Params

if TYPE_CHECKING:
    from emoface.analysis.ablations import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(params, params.ablations.A6.models,
                                                        [BASELINE])


def analysis(ctx: AnalysisContext) -> AblationResult:
    from emoface.analysis.ablations import a6_more_models

    return a6_more_models(ctx)


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import new_figure, save

    d = result.plots["models"]
    fig, axes = new_figure("A6: kappa and collapse across models", result.simulated, 2)
    axes[0].bar(range(d.height), d["kappa"])
    axes[0].set_xticks(range(d.height), d["model_id"], rotation=30, ha="right", fontsize=7)
    axes[0].set_ylabel("Cohen's kappa")
    axes[1].bar(range(d.height), d["arousal_sd_ratio_human"])
    axes[1].axhline(1, color="grey", ls="--", lw=.8)
    axes[1].set_xticks(range(d.height), d["model_id"], rotation=30, ha="right", fontsize=7)
    axes[1].set_ylabel("within-category SD / humans' (arousal)")
    return [save(fig, folder / "models.png")]


ABLATION = Ablation(
    id="A6", name="more VLMs", priority=2, tiers=("competitive", "complete", "extended"),
    paper_section="generalisation",
    hypothesis="The findings generalise beyond two models.",
    interpretation="The same pattern (kappa, collapse) across N >= 4 models => it generalises.",
    planned_hours=4.0, needs="baseline protocol on the extra models",
    work=work, analysis=analysis, figures=figures, params=A6Params,
)
