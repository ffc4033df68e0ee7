"""A4: FP16 vs 4-bit. Gemma3-4B in both precisions at T = 0 (the 4-bit arm is the baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import BASELINE, Ablation, WorkItem, predictions
from emoface.config import A4Params

if TYPE_CHECKING:
    from emoface.analysis.ablations import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    # every arm's models: the QAT release, the self-quantized copy (mlx FP16 only), FP16
    arms = params.ablations.A4.arms().values()
    return predictions(params, tuple(dict.fromkeys(m for pair in arms for m in pair)), [BASELINE])


def analysis(ctx: AnalysisContext) -> AblationResult:
    from emoface.analysis.ablations import a4_quantization

    return a4_quantization(ctx)


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import paired_differences_figure

    return [paired_differences_figure(result, "A4: FP16 minus 4-bit",
                                      folder / "paired_differences.png")]


ABLATION = Ablation(
    id="A4", name="FP16 vs 4-bit", priority=2, tiers=("competitive", "complete", "extended"),
    paper_section="quantization share",
    hypothesis="4-bit quantization removes part of the within-category variance.",
    interpretation="Expected a little more variance at FP16 (an estimated 20-30 % restored).",
    planned_hours=3.0, needs="Gemma3-4B in FP16 and 4-bit, T = 0",
    work=work, analysis=analysis, figures=figures, params=A4Params,
)
