"""A9: hidden states. Per-layer hidden states of one model (``ablations.A9.model``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import Ablation, WorkItem
from emoface.config import A9Params

if TYPE_CHECKING:
    from emoface.analysis.ablations import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return [WorkItem("hidden", params.stimuli.set_name, params.ablations.A9.model)]


def analysis(ctx: AnalysisContext) -> AblationResult:
    from emoface.analysis.ablations import a9_hidden_states

    return a9_hidden_states(ctx)


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import polars as pl

    from emoface.analysis.figures import new_figure, save

    d = result.plots["cka_rsa_by_layer"]
    fig, (ax,) = new_figure("A9: hidden states vs human ratings by layer", result.simulated)
    for i, pool in enumerate(("image_pool", "last_token")):
        sub = d.filter(pl.col("pooling") == pool).sort("layer")
        ax.plot(sub["layer"], sub["debiased_cka"], marker="o", color=f"C{i}",
                label=f"debiased CKA ({pool})")
        ax.plot(sub["layer"], sub["within_category_debiased_cka"], ls="--", color=f"C{i}",
                label=f"within-category CKA ({pool})")
    sub = d.filter(pl.col("pooling") == "image_pool").sort("layer")
    ax.plot(sub["layer"], sub["rsa_spearman"], marker="s", color="C2", label="RSA (Spearman)")
    ax.set(xlabel="decoder layer", ylabel="similarity to human ratings")
    ax.legend(fontsize=6)
    return [save(fig, folder / "cka_rsa_by_layer.png")]


ABLATION = Ablation(
    id="A9", name="hidden states", priority=3, tiers=("complete", "extended"),
    paper_section="representation vs output",
    hypothesis="The representation holds within-category information the output lacks.",
    interpretation="CKA/RSA with the human ratings above the permutation null, within categories "
                   "=> information in the representation, not in the output.",
    planned_hours=4.0, needs="hidden states of Gemma3 per layer",
    work=work, analysis=analysis, figures=figures, params=A9Params,
)
