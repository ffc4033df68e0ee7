"""A6: more VLMs. The baseline protocol on the extra models of ``ablations.A6.models``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, field_validator

from emoface.ablations.base import BASELINE, Ablation, WorkItem, baseline_items, predictions
from emoface.config import ModelId, _Frozen, _no_duplicates

if TYPE_CHECKING:
    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


class A6Params(_Frozen):
    """``ablations.A6``: the extra models run with the baseline protocol."""

    models: tuple[ModelId, ...] = Field(("simulated/qwen2-vl-7b", "simulated/kimi-vl",
                                         "simulated/smolvlm2"), max_length=32)

    @field_validator("models")
    @classmethod
    def _unique(cls, v: tuple) -> tuple:
        return _no_duplicates(v, "model")


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(params, params.ablations.A6.models,
                                                        [BASELINE])


def analysis(ctx: AnalysisContext) -> AblationResult:
    """Per model: the ratio of its within-category SD of arousal to the humans' over the same
    images and groups, with an identity-bootstrap CI; the pattern generalises when N >= 4 and
    every model's ratio is below 1 (Holm over models)."""
    import polars as pl

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt
    from emoface.analysis.stats import bc_pvalue

    models = list(dict.fromkeys([*ctx.models, *ctx.params.ablations.A6.models]))
    n_boot = ctx.a.secondary_bootstrap
    frames = {(m, BASELINE.condition_id): ctx.predictions(m) for m in models}
    table = M.metrics_table(frames, ctx.emotions, alpha=ctx.a.alpha, n_boot=n_boot,
                            seed=ctx.a.seed)
    human = M.human_within_category_sd(next(iter(frames.values())))
    ratios = []
    for (m, _), df in frames.items():
        w = C.boot_weights(ctx, df["identity"].to_list(), n_boot)
        x = df["arousal"].to_numpy().astype(float)
        h = df["arousal_mean"].to_numpy().astype(float)
        keep = np.isfinite(x)
        for g in M.GROUPINGS:
            pm, sm = C.grouped(df, x, g, w, keep)
            ph, sh = C.grouped(df, h, g, w, keep)
            point = pm / ph if ph > 0 else np.nan
            with np.errstate(invalid="ignore", divide="ignore"):
                samples = sm / sh
            lo, hi = M.percentile_ci(samples, ctx.a.alpha, point)
            ratios.append({"model_id": m, "grouping": g, "model_sd": pm, "human_sd": ph,
                           "ratio": point, "ratio_low": lo, "ratio_high": hi,
                           "p": bc_pvalue(samples, point, 1.0)})
    n = len(models)
    overall = {}
    for g in M.GROUPINGS:
        fam = [r for r in ratios if r["grouping"] == g]
        C.add_holm(fam)
        for r in fam:
            r["collapsed"] = bool(r["p_holm"] < ctx.a.alpha and r["ratio"] < 1)
            r["wider"] = bool(r["p_holm"] < ctx.a.alpha and r["ratio"] > 1)
        n_col = sum(r["collapsed"] for r in fam)
        overall[g] = (C.CANNOT_TELL if n < 4 else C.SUPPORTS if n_col == n
                      else C.NOT_SUPPORTED if any(r["wider"] for r in fam) else C.CANNOT_TELL)
    ratio_df = pl.DataFrame(ratios)
    prim = ratio_df.filter(pl.col("grouping") == "intended")
    table = table.join(prim.select("model_id", pl.col("ratio").alias("arousal_sd_ratio_human"),
                                   pl.col("ratio_low").alias("arousal_sd_ratio_low"),
                                   pl.col("ratio_high").alias("arousal_sd_ratio_high"),
                                   pl.col("p_holm").alias("arousal_sd_ratio_p_holm")),
                       on="model_id", how="left")
    counts = {g: int(ratio_df.filter((pl.col("grouping") == g) & pl.col("collapsed")).height)
              for g in M.GROUPINGS}
    per_model = "; ".join(f"{r['model_id']} {fmt(r['ratio'])} [{fmt(r['ratio_low'])}, "
                          f"{fmt(r['ratio_high'])}] (Holm p {fmt(r['p_holm'], 4)})"
                          for r in prim.iter_rows(named=True))
    verdict = (f"A6 (rule: N >= 4 models and every model's ratio of within-category SD of arousal"
               f" to the humans' (same images, intended emotion) has a CI below 1 after Holm => "
               f"it generalises): {counts['intended']} of {n} models collapse "
               f"(correctly labelled images: {counts['correct']}; own label: {counts['label']}); "
               f"ratios {per_model}; kappa range {fmt(table['kappa'].min())}-"
               f"{fmt(table['kappa'].max())}" + C.definitions_line(overall))
    return AblationResult("A6", verdict, C.across_definitions(overall),
                          tables={"main": table, "sd_ratios": ratio_df},
                          plots={"models": table.select("model_id", "kappa",
                                                        "arousal_within_category_sd",
                                                        "arousal_sd_ratio_human")},
                          metrics={"n_models": n, "human_within_category_sd": human,
                                   "collapsed_by_grouping": counts,
                                   "outcome_by_grouping": overall, "family": "models",
                                   "rows": table.to_dicts(), "ratios": ratio_df.to_dicts()},
                          simulated=bool(table["simulated"].any()),
                          provenance=C.provenance(list(frames.values())))


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
    analysis_seconds=2.0,  # CPU s on the embedded set (emoface/planning.py)
)
