"""A2: single-shot prompting. One JSON prompt per image instead of the context-carry turns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import Ablation, WorkItem, baseline_items, predictions
from emoface.inference.conditions import Condition

if TYPE_CHECKING:
    from emoface.analysis.ablations import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params

SINGLE_SHOT = Condition(protocol="single_shot")


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(params, models, [SINGLE_SHOT])


def analysis(ctx: AnalysisContext) -> AblationResult:
    from emoface.analysis.ablations import a2_single_shot

    return a2_single_shot(ctx)


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import paired_differences_figure

    return [paired_differences_figure(result, "A2: single-shot minus context-carry",
                                      folder / "paired_differences.png")]


ABLATION = Ablation(
    id="A2", name="single-shot prompting", priority=1,
    tiers=("minimal", "competitive", "complete", "extended"),
    paper_section="context-carry confound",
    hypothesis="Context-carry anchoring suppresses within-category variance.",
    interpretation="Within-category SD rises in single-shot => context-carry anchoring "
                   "suppresses variance.",
    planned_hours=2.0, needs="one JSON prompt per image, both models",
    work=work, analysis=analysis, figures=figures,
)
