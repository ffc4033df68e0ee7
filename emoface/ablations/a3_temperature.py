"""A3: temperature. T in the grid x repeats, both models (T = 0's repeats are the baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import Ablation, WorkItem, baseline_items, predictions
from emoface.config import A3Params
from emoface.inference.conditions import Condition

if TYPE_CHECKING:
    from emoface.analysis.ablations import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


def grid(params: Params) -> list[Condition]:
    """Every (temperature, repeat) condition of the grid, as requested (T = 0 repeats included:
    they dedupe to one piece of work)."""
    a3 = params.ablations.A3
    distinct = a3.t0_repeats == "distinct"  # T = 0 repeats re-run with their own seeds
    return [Condition(temperature=t, repeat=r, distinct_t0=distinct) for t in a3.temperatures
            for r in range(1, a3.repeats + 1)]


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(params, models, grid(params))


def analysis(ctx: AnalysisContext) -> AblationResult:
    from emoface.analysis.ablations import a3_temperature

    return a3_temperature(ctx)


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import polars as pl

    from emoface.analysis.figures import new_figure, save

    d = result.plots["within_category_sd_by_temperature"]
    fig, (ax,) = new_figure("A3: within-category SD of arousal by temperature", result.simulated)
    for i, (model,) in enumerate(d.select("model_id").unique(maintain_order=True).rows()):
        sub = d.filter(pl.col("model_id") == model).sort("temperature")
        ax.errorbar(sub["temperature"], sub["mean"], yerr=sub["sd_over_repeats"].fill_null(0),
                    marker="o", capsize=3, label=model, color=f"C{i}")
    ax.set(xlabel="temperature", ylabel="within-category SD (mean over repeats)")
    ax.legend(fontsize=7)
    return [save(fig, folder / "within_category_sd_by_temperature.png")]


ABLATION = Ablation(
    id="A3", name="temperature", priority=2, tiers=("competitive", "complete", "extended"),
    paper_section="fixed-value pattern",
    hypothesis="Greedy decoding (the output constraint) causes the fixed values.",
    interpretation="Within-category SD rises with T => the output constraint is the main cause.",
    planned_hours=8.0, needs="T in the grid x repeats, both models",
    work=work, analysis=analysis, figures=figures, params=A3Params,
)
