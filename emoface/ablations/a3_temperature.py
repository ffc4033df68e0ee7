"""A3: temperature. T in the grid x repeats, both models (T = 0's repeats are the baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from emoface.ablations.base import Ablation, Headline, WorkItem, baseline_items, predictions
from emoface.ablations.report_spec import (
    GROUPING,
    MODEL,
    OUTCOME,
    Col,
    ReportSpec,
    View,
    ci,
    paired_decisions,
)
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
    rows, agree, frames, trend, signal = [], [], [], [], []
    conds = _a3_conditions(ctx)
    for m in ctx.models:
        dfs = [ctx.predictions(m, c) for c in conds]
        frames += dfs
        temps = np.array([c.temperature for c in conds])
        keep_all = np.logical_and.reduce([d["arousal"].is_not_null().to_numpy() for d in dfs])
        # the images every condition rated; for the ``correct`` grouping also labelled correctly
        # in ALL conditions (the same images everywhere, as the plan says)
        keeps = {g: keep_all & C.correct_in_all(dfs) if g == "correct" else keep_all
                 for g in M.GROUPINGS}
        one = np.ones((1, dfs[0].height))
        xs = [d["arousal"].to_numpy().astype(float) for d in dfs]
        for c, df, x in zip(conds, dfs, xs, strict=True):
            rows.append({"model_id": m, "temperature": c.temperature, "repeat": c.repeat,
                         "condition_id": c.condition_id,
                         **{f"arousal_{M.GROUPING_COLUMN[g]}": M.w_grouped_sd(
                             df, x, g, one, keeps[g])[0] for g in M.GROUPINGS},
                         **{f"arousal_within_r_{g}": M.w_grouped_signal(
                             df, x, "arousal", g, one, keeps[g])[0][0] for g in M.GROUPINGS}})
        for t in grid.temperatures:
            sub = [d for c, d in zip(conds, dfs, strict=True) if c.temperature == t]
            stacked = pl.concat([d.select("stimulus_id", "arousal") for d in sub])
            same = stacked.group_by("stimulus_id", maintain_order=True).agg(
                pl.col("arousal").n_unique() == 1)
            agree.append({"model_id": m, "temperature": t, "n_repeats": len(sub),
                          "share_all_repeats_agree": float(same["arousal"].mean())})
        w = C.boot_weights(ctx, dfs[0]["identity"].to_list())
        tc = temps - temps.mean()
        varies = len(set(temps)) > 1

        def slope_over_t(point: np.ndarray, samples: np.ndarray, tc: np.ndarray = tc,
                         varies: bool = varies) -> tuple[float, np.ndarray]:
            """Least-squares slope over the conditions' temperatures, point and per resample."""
            est = float((point - point.mean()) @ tc / (tc**2).sum()) if varies else np.nan
            return est, ((samples - samples.mean(axis=1, keepdims=True)) * tc).sum(axis=1) \
                / (tc**2).sum()

        for g in M.GROUPINGS:
            point = np.array([M.w_grouped_sd(d, x, g, one, keeps[g])[0]
                              for d, x in zip(dfs, xs, strict=True)])
            sds = np.stack([M.w_grouped_sd(d, x, g, w, keeps[g])
                            for d, x in zip(dfs, xs, strict=True)], axis=1)  # (B, conditions)
            slope, slopes = slope_over_t(point, sds)
            lo, hi = M.percentile_ci(slopes, ctx.a.alpha, slope)
            ols = smf.ols("y ~ t", pd.DataFrame({"y": point, "t": temps})).fit() \
                if varies else None
            trend.append({"model_id": m, "grouping": g, "slope": slope, "slope_low": lo,
                          "slope_high": hi, "p": bc_pvalue(slopes, slope),
                          "ols_p": float(ols.pvalues["t"]) if ols is not None else np.nan})
            # signal: the pooled within-category r (and slope) of arousal on the human means
            pr, ps = zip(*(M.w_grouped_signal(d, x, "arousal", g, one, keeps[g])
                           for d, x in zip(dfs, xs, strict=True)), strict=True)
            br, bs = zip(*(M.w_grouped_signal(d, x, "arousal", g, w, keeps[g])
                           for d, x in zip(dfs, xs, strict=True)), strict=True)
            row = {"model_id": m, "field": "arousal", "grouping": g,
                   "n_images": int(keeps[g].sum()),
                   "r_by_condition": [float(v[0]) for v in pr],
                   "slope_by_condition": [float(v[0]) for v in ps]}
            for key, pt, bt in (("r", pr, br), ("slope", ps, bs)):
                est, samples = slope_over_t(np.array([v[0] for v in pt]), np.stack(bt, axis=1))
                low, high = M.percentile_ci(samples, ctx.a.alpha, est)
                row.update({f"{key}_trend": est, f"{key}_trend_low": low,
                            f"{key}_trend_high": high, f"{key}_p": bc_pvalue(samples, est)})
            row["p"] = row["r_p"]
            signal.append(row)
    per_repeat = pl.DataFrame(rows)
    summary = per_repeat.group_by("model_id", "temperature", maintain_order=True).agg(
        pl.col("arousal_within_category_sd").mean().alias("mean"),
        pl.col("arousal_within_category_sd").std().alias("sd_over_repeats"),
        pl.col("arousal_within_r_intended").mean().alias("within_r_human"),
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
    signal_overall = C.signal_verdicts(signal, ctx.a.alpha, "r_trend")
    sig = {r["model_id"]: r for r in signal if r["grouping"] == "intended"}
    r_by_t = per_repeat.group_by("model_id", "temperature", maintain_order=True).agg(
        pl.col("arousal_within_r_intended").mean())
    verdicts = [f"{t['model_id']}: within-category SD of arousal changes by {fmt(t['slope'])} "
                f"per unit T [{fmt(t['slope_low'])}, {fmt(t['slope_high'])}] (identity "
                f"bootstrap), p = {fmt(t['p'], 4)} (Holm {fmt(t['p_holm'], 4)}) -> "
                f"{word(t['outcome'])}; within-category r with the human means "
                + ", ".join(f"{fmt(r)} (T = {tt:g})" for tt, r in r_by_t.filter(
                    pl.col("model_id") == t["model_id"]).select(
                    "temperature", "arousal_within_r_intended").iter_rows())
                + f", change per unit T {fmt(s_['r_trend'])} [{fmt(s_['r_trend_low'])}, "
                f"{fmt(s_['r_trend_high'])}] (Holm p {fmt(s_['p_holm'], 4)}) -> "
                f"{word(s_['outcome'])}"
                for t in trend if t["grouping"] == "intended" for s_ in [sig[t["model_id"]]]]
    signal_outcome, reading, both, line = C.reading_line(overall, signal_overall)
    t0 = ("T = 0 repeats re-run with their own seeds (t0_repeats: distinct): they measure the "
          "server's non-determinism" if grid.t0_repeats == "distinct" else
          "T = 0 repeats are deterministic by design and run once (t0_repeats: deterministic);"
          " set ablations.A3.t0_repeats: distinct to re-run them with their own seeds")
    return AblationResult(
        "A3", "A3 (rule: within-category SD (intended emotion, same images) rises with T => "
        "output constraint; signal: the slope over T of the pooled within-category r of arousal "
        f"with the human means; each family: {len(ctx.models)} model(s), Holm; correct grouping: "
        "images labelled correctly in all conditions): " + "; ".join(verdicts)
        + C.definitions_line(overall) + line + f". Note: {t0}.", C.across_definitions(overall),
        tables={"main": summary, "per_repeat": per_repeat, "trend": trend_df,
                "signal": pl.DataFrame(signal).drop("r_by_condition", "slope_by_condition")},
        plots={"within_category_sd_by_temperature": summary.select(
            "model_id", "temperature", "mean", "sd_over_repeats")},
        metrics={"trend": trend, "summary": summary.to_dicts(), "outcome_by_grouping": overall,
                 "t0_repeats": grid.t0_repeats, "family": "models",
                 "signal": {"rows": signal, "outcome_by_grouping": signal_overall,
                            "outcome": signal_outcome, "both_rules": both, "reading": reading,
                            "family": "models"}},
        simulated=C.any_simulated(frames), provenance=C.provenance(frames))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import polars as pl

    from emoface.analysis.figures import new_figure, save

    d = result.plots["within_category_sd_by_temperature"]
    trend = {r["model_id"]: r for r in result.tables["trend"].filter(
        pl.col("grouping") == "intended").iter_rows(named=True)}
    fig, (ax,) = new_figure("A3: within-category SD of arousal by temperature (bars: SD over "
                            "repeats; legend: slope [95 % CI])", result.simulated)
    for i, (model,) in enumerate(d.select("model_id").unique(maintain_order=True).rows()):
        sub = d.filter(pl.col("model_id") == model).sort("temperature")
        t = trend.get(model)
        slope = (f", slope {t['slope']:.2f} [{t['slope_low']:.2f}, {t['slope_high']:.2f}]"
                 if t else "")
        ax.errorbar(sub["temperature"], sub["mean"], yerr=sub["sd_over_repeats"].fill_null(0),
                    marker="o", capsize=3, label=model + slope, color=f"C{i}")
    ax.set(xlabel="temperature", ylabel="within-category SD (mean over repeats)")
    ax.legend(fontsize=7)
    return [save(fig, folder / "within_category_sd_by_temperature.png")]


REPORT = ReportSpec(
    "Does greedy decoding (T = 0) cause the fixed arousal values?",
    paired_decisions("trend", "change of within-category SD of arousal per unit of T", "slope",
                     "slope_low", "slope_high", grouping="intended"),
    "models", (
        View("trend", (MODEL, GROUPING, ci("slope per unit T [CI]", "slope", "slope_low",
                                          "slope_high"),
                       Col("p", "p"), Col("p (Holm)", "p_holm"), Col("OLS p", "ols_p"), OUTCOME),
             "Trend of the within-category SD of arousal over temperature"),
        View("main", (MODEL, Col("T", "temperature"), Col("repeats", "n_repeats"),
                      Col("within-category SD (mean over repeats)", "mean"),
                      Col("SD over repeats", "sd_over_repeats"),
                      Col("share of images whose repeats agree", "share_all_repeats_agree")),
             "Within-category SD of arousal by temperature")))


ABLATION = Ablation(
    id="A3", name="temperature", priority=2, tiers=("competitive", "complete", "extended"),
    headline=Headline("trend", "slope", "slope_low", "slope_high", "p_holm"),  # its DVC metrics row
    paper_section="fixed-value pattern",
    hypothesis="Greedy decoding (the output constraint) causes the fixed values.",
    interpretation="Within-category SD rises with T => the output constraint is the main cause.",
    planned_hours=8.0, needs="T in the grid x repeats, both models",
    work=work, analysis=analysis, figures=figures, params=A3Params, report=REPORT,
    analysis_seconds=4.0,  # CPU s on the embedded set (emoface/planning.py)
)
