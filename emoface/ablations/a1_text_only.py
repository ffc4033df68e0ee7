"""A1: text-only arousal. No image: the prompt gives only the emotion label, both models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import Ablation, WorkItem, baseline_items, predictions
from emoface.config import A1Params
from emoface.inference.conditions import Condition

if TYPE_CHECKING:
    from emoface.analysis.ablations import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


def text_only(params: Params) -> Condition:
    """The text-only condition (the label from the model's own baseline answer, or intended)."""
    return Condition(protocol="text_only", label_source=params.ablations.A1.label_source)


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(params, models, [text_only(params)])


def analysis(ctx: AnalysisContext) -> AblationResult:
    from emoface.analysis.ablations import a1_text_only

    return a1_text_only(ctx)


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import numpy as np
    import polars as pl

    from emoface.analysis.figures import new_figure, save

    s = result.plots["scatter"]
    models = s["model_id"].unique(maintain_order=True).to_list()
    fig, axes = new_figure("A1: arousal with image+label vs label only", result.simulated,
                           len(models))
    rng = np.random.default_rng(0)
    for ax, model in zip(axes, models, strict=True):
        d = s.filter(pl.col("model_id") == model)
        ax.scatter(d["arousal_label_only"] + rng.uniform(-.2, .2, d.height),
                   d["arousal_image_label"] + rng.uniform(-.2, .2, d.height), s=4, alpha=.4)
        ax.plot([1, 9], [1, 9], color="grey", lw=.8)
        ax.set(xlabel="label-only arousal", ylabel="image + label arousal", title=model,
               xlim=(0.5, 9.5), ylim=(0.5, 9.5))
    return [save(fig, folder / "scatter.png")]


ABLATION = Ablation(
    id="A1", name="text-only arousal", priority=1,
    tiers=("minimal", "competitive", "complete", "extended"),
    paper_section="strength-inversion claim",
    hypothesis="Arousal ratings given the image and label are largely reproduced from the label "
               "alone.",
    interpretation="High corr(image+label arousal, label-only arousal) => the arousal 'advantage' "
                   "is a language prior, not perception.",
    planned_hours=2.0,
    needs="text-only prompts with each model's own baseline label, both models",
    work=work, analysis=analysis, figures=figures, params=A1Params,
)
