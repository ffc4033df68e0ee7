"""A3: temperature. T in the grid x repeats, both models (T = 0's repeats are the baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from emoface.ablations.base import Ablation, WorkItem, baseline_items, predictions
from emoface.config import Temperature, _Frozen, _no_duplicates
from emoface.inference.conditions import Condition

if TYPE_CHECKING:
    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


class A3Params(_Frozen):
    """``ablations.A3``: the temperature grid, repeats per temperature, T = 0 repeats."""

    temperatures: tuple[Temperature, ...] = Field((0.0, 0.3, 0.7, 1.0), min_length=1,
                                                  max_length=16)
    repeats: int = Field(3, ge=1, le=100)
    # T = 0 repeats: one piece of work (deterministic by design) or re-run with their own seeds
    # to measure the server's non-determinism
    t0_repeats: Literal["deterministic", "distinct"] = "deterministic"

    @field_validator("temperatures")
    @classmethod
    def _unique(cls, v: tuple) -> tuple:
        return _no_duplicates(v, "temperature")


def grid(params: Params) -> list[Condition]:
    """Every (temperature, repeat) condition of the grid, as requested (T = 0 repeats included:
    they dedupe to one piece of work)."""
    a3 = params.ablations.A3
    distinct = a3.t0_repeats == "distinct"  # T = 0 repeats re-run with their own seeds
    return [Condition(temperature=t, repeat=r, distinct_t0=distinct) for t in a3.temperatures
            for r in range(1, a3.repeats + 1)]


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(params, models, grid(params))


def _a3_conditions(ctx: AnalysisContext) -> list[Condition]:
    """A3's distinct pieces of work: T = 0 repeats are one unless ``t0_repeats: distinct``."""
    grid = ctx.params.ablations.A3
    distinct = grid.t0_repeats == "distinct"
    conds = [Condition(temperature=t, repeat=r, distinct_t0=distinct)
             for t in grid.temperatures for r in range(1, grid.repeats + 1)]
    return list({c.condition_id: c for c in conds}.values())


def analysis(ctx: AnalysisContext) -> AblationResult:
    """Slope of the within-category SD of arousal over temperature, same images everywhere."""
    import pandas as pd
    import polars as pl
    import statsmodels.formula.api as smf

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, word
    from emoface.analysis.stats import bc_pvalue

    grid = ctx.params.ablations.A3
    rows, agree, frames, trend = [], [], [], []
    conds = _a3_conditions(ctx)
    for m in ctx.models:
        dfs = [ctx.predictions(m, c) for c in conds]
        frames += dfs
        temps = np.array([c.temperature for c in conds])
        keep_all = np.logical_and.reduce([d["arousal"].is_not_null().to_numpy() for d in dfs])
        for c, df in zip(conds, dfs, strict=True):
            rows.append({"model_id": m, "temperature": c.temperature, "repeat": c.repeat,
                         "condition_id": c.condition_id,
                         **{f"arousal_{M.GROUPING_COLUMN[g]}": M.w_grouped_sd(
                             df, df["arousal"].to_numpy().astype(float), g,
                             np.ones((1, df.height)), keep_all)[0] for g in M.GROUPINGS}})
        for t in grid.temperatures:
            sub = [d for c, d in zip(conds, dfs, strict=True) if c.temperature == t]
            stacked = pl.concat([d.select("stimulus_id", "arousal") for d in sub])
            same = stacked.group_by("stimulus_id", maintain_order=True).agg(
                pl.col("arousal").n_unique() == 1)
            agree.append({"model_id": m, "temperature": t, "n_repeats": len(sub),
                          "share_all_repeats_agree": float(same["arousal"].mean())})
        w = C.boot_weights(ctx, dfs[0]["identity"].to_list())
        tc = temps - temps.mean()
        for g in M.GROUPINGS:
            point = np.array([M.w_grouped_sd(d, d["arousal"].to_numpy().astype(float), g,
                                             np.ones((1, d.height)), keep_all)[0] for d in dfs])
            sds = np.stack([M.w_grouped_sd(d, d["arousal"].to_numpy().astype(float), g, w,
                                           keep_all) for d in dfs], axis=1)  # (B, conditions)
            slope = float((point - point.mean()) @ tc / (tc**2).sum()) if len(set(temps)) > 1 \
                else np.nan
            slopes = ((sds - sds.mean(axis=1, keepdims=True)) * tc).sum(axis=1) / (tc**2).sum()
            lo, hi = M.percentile_ci(slopes, ctx.a.alpha, slope)
            ols = smf.ols("y ~ t", pd.DataFrame({"y": point, "t": temps})).fit() \
                if len(set(temps)) > 1 else None
            trend.append({"model_id": m, "grouping": g, "slope": slope, "slope_low": lo,
                          "slope_high": hi, "p": bc_pvalue(slopes, slope),
                          "ols_p": float(ols.pvalues["t"]) if ols is not None else np.nan})
    per_repeat = pl.DataFrame(rows)
    summary = per_repeat.group_by("model_id", "temperature", maintain_order=True).agg(
        pl.col("arousal_within_category_sd").mean().alias("mean"),
        pl.col("arousal_within_category_sd").std().alias("sd_over_repeats"),
        pl.len().alias("n_repeats")).sort("model_id", "temperature").join(
        pl.DataFrame(agree), on=["model_id", "temperature"])
    overall = {}
    for g in M.GROUPINGS:
        fam = [t for t in trend if t["grouping"] == g]
        C.add_holm(fam)
        for t in fam:
            t["outcome"] = C.p_outcome(t["p_holm"], t["slope"], ctx.a.alpha)
        overall[g] = C.combine([t["outcome"] for t in fam])
    trend_df = pl.DataFrame(trend)
    verdicts = [f"{t['model_id']}: within-category SD of arousal changes by {fmt(t['slope'])} "
                f"per unit T [{fmt(t['slope_low'])}, {fmt(t['slope_high'])}] (identity "
                f"bootstrap), p = {fmt(t['p'], 4)} (Holm {fmt(t['p_holm'], 4)}) -> "
                f"{word(t['outcome'])}" for t in trend if t["grouping"] == "intended"]
    t0 = ("T = 0 repeats re-run with their own seeds (t0_repeats: distinct): they measure the "
          "server's non-determinism" if grid.t0_repeats == "distinct" else
          "T = 0 repeats are deterministic by design and run once (t0_repeats: deterministic);"
          " set ablations.A3.t0_repeats: distinct to re-run them with their own seeds")
    return AblationResult(
        "A3", "A3 (rule: within-category SD (intended emotion, same images) rises with T => "
        f"output constraint; family: {len(ctx.models)} model(s), Holm): " + "; ".join(verdicts)
        + C.definitions_line(overall) + f". Note: {t0}.", C.across_definitions(overall),
        tables={"main": summary, "per_repeat": per_repeat, "trend": trend_df},
        plots={"within_category_sd_by_temperature": summary.select(
            "model_id", "temperature", "mean", "sd_over_repeats")},
        metrics={"trend": trend, "summary": summary.to_dicts(), "outcome_by_grouping": overall,
                 "t0_repeats": grid.t0_repeats, "family": "models"},
        simulated=C.any_simulated(frames), provenance=C.provenance(frames))


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
    analysis_seconds=4.0,  # CPU s on the embedded set (emoface/planning.py)
)
