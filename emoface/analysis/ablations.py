"""The baseline tables and the nine ablation analyses (A5, A8, A9 live in their own modules).

Each function takes an :class:`AnalysisContext` and returns an :class:`AblationResult`: tidy tables
(the ``main`` one is published as the Prefect artifact), JSON metrics (DVC metrics), plot tables
(DVC plots, CSV), and a verdict that applies the decision rule of docs/analysis-plan.md to the
measured effect, its CI and its Holm-adjusted p — "supports", "does not support", "cannot tell",
or "definition-sensitive" when the three within-category groupings disagree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import statsmodels.formula.api as smf

from emoface.ablations import BASELINE
from emoface.analysis import metrics as M
from emoface.analysis.a5_digits import a5_dark_knowledge, digit_table  # noqa: F401
from emoface.analysis.a8_race import a8_fpr_by_race  # noqa: F401
from emoface.analysis.a9_hidden import a9_hidden_states  # noqa: F401
from emoface.analysis.common import (
    CANNOT_TELL,
    NOT_SUPPORTED,
    SUPPORTS,
    AblationResult,
    across_definitions,
    add_holm,
    any_simulated,
    boot_weights,
    combine,
    fmt,
    p_outcome,
    provenance,
    word,
)
from emoface.analysis.context import AnalysisContext
from emoface.analysis.stats import (
    bc_one_sided_p,
    bc_pvalue,
    compare_dependent_correlations,
    equivalence_p,
    pearson_with_ci,
)
from emoface.inference.conditions import Condition

__all__ = ["AblationResult", "run_analysis"]
R_HIGH = 0.7  # A1: a "high" label-only correlation (descriptive only since the margin rule)
PLAN_RANGE = (0.20, 0.30)  # A4: the plan's estimate of the share of variance restored at FP16
RANGE_PHRASE = {"inside": "lies inside", "below": "lies below", "above": "lies above",
                "overlaps": "overlaps (neither inside nor outside)"}


# --- baseline -------------------------------------------------------------------------------

def baseline(ctx: AnalysisContext) -> AblationResult:
    """The study models and the FER classifier(s) side by side (FER gives labels only)."""
    models = list(dict.fromkeys([*ctx.models, *ctx.params.models.fer]))
    frames = {(m, BASELINE.condition_id): ctx.predictions(m) for m in models}
    table = M.metrics_table(frames, ctx.emotions, alpha=ctx.a.alpha, n_boot=ctx.a.bootstrap,
                            seed=ctx.a.seed)
    human = M.human_within_category_sd(next(iter(frames.values())))
    conf = pl.concat([M.confusion(df, ctx.emotions).with_columns(pl.lit(m).alias("model_id"))
                      for (m, _), df in frames.items()])
    lines = [f"{r['model_id']}: accuracy {fmt(r['accuracy'])}, kappa {fmt(r['kappa'])} "
             f"[{fmt(r['kappa_low'])}, {fmt(r['kappa_high'])}] (6 x 6, {int(r['n_excluded'])} "
             f"answers outside the set excluded; 7-column kappa {fmt(r['kappa7'])}), "
             + ("no valence/arousal (a classifier)" if r["model_id"].startswith("fer/") else
                f"arousal r {fmt(r['arousal_r'])}, within-category SD of arousal by intended "
                f"emotion {fmt(r['arousal_within_category_sd'])} (humans, same images "
                f"{fmt(r['arousal_human_within_category_sd'])}; correctly labelled images "
                f"{fmt(r['arousal_within_correct_sd'])} vs "
                f"{fmt(r['arousal_human_within_correct_sd'])}; by the model's own label "
                f"{fmt(r['arousal_within_label_sd'])} vs "
                f"{fmt(r['arousal_human_within_label_sd'])})")
             for r in table.iter_rows(named=True)]
    return AblationResult(
        "baseline", "Baseline (context-carry, T = 0): " + "; ".join(lines), "not_applicable",
        tables={"main": table, "confusion": conf},
        metrics={"models": {r["model_id"]: {k: v for k, v in r.items() if k != "model_id"}
                            for r in table.iter_rows(named=True)},
                 "human_within_category_sd": human},
        plots={"within_category_sd": table.select("model_id", "valence_within_category_sd",
                                                  "arousal_within_category_sd")},
        simulated=bool(table["simulated"].any()),
        provenance=provenance(list(frames.values())))


# --- A1 -------------------------------------------------------------------------------------

def _a1_outcome(p_eq: float, p_perc: float, alpha: float) -> str:
    if np.isfinite(p_eq) and p_eq < alpha:
        return SUPPORTS  # the image adds less than the margin: a language prior
    if np.isfinite(p_perc) and p_perc < alpha:
        return NOT_SUPPORTED  # the image adds more than the margin: perception
    return CANNOT_TELL


def a1_text_only(ctx: AnalysisContext) -> AblationResult:
    """Does the arousal agreement with humans survive without the image? Decided on
    d = r(human, image) - r(human, label-only) against the equivalence margin (params)."""
    text = Condition(protocol="text_only", label_source=ctx.params.ablations.A1.label_source)
    margin = ctx.params.ablations.A1.margin
    rows, scatter, frames = [], [], []
    for m in ctx.models:
        img, lab = ctx.predictions(m), ctx.predictions(m, text)
        frames += [img, lab]
        for f in M.FIELDS:
            d = img.select("stimulus_id", "identity", pl.col(f).alias("x"),
                           pl.col(f"{f}_mean").alias("h")).join(
                lab.select("stimulus_id", pl.col(f).alias("y")), on="stimulus_id").drop_nulls()
            x, y, h = (d[c].to_numpy().astype(float) for c in ("x", "y", "h"))
            r_xy, lo_xy, hi_xy = pearson_with_ci(x, y, ctx.a.alpha)
            r_hx, r_hy = pearson_with_ci(h, x)[0], pearson_with_ci(h, y)[0]
            test = compare_dependent_correlations(r_hx, r_hy, r_xy, len(x), ctx.a.alpha) \
                if np.isfinite([r_hx, r_hy, r_xy]).all() else None
            w = boot_weights(ctx, d["identity"].to_list())
            boot_xy = M.percentile_ci(M.w_pearson(x, y, w), ctx.a.alpha, r_xy)
            diff = r_hx - r_hy
            samples = M.w_pearson(h, x, w) - M.w_pearson(h, y, w)
            boot_diff = M.percentile_ci(samples, ctx.a.alpha, diff)
            rows.append({"model_id": m, "field": f, "n": len(x), "r_image_label": r_xy,
                         "r_image_label_low": lo_xy, "r_image_label_high": hi_xy,
                         "r_image_label_boot_low": boot_xy[0],
                         "r_image_label_boot_high": boot_xy[1],
                         "r_human_image": r_hx, "r_human_label_only": r_hy,
                         "diff_human_r": diff,
                         "williams_t": test.williams_t if test else np.nan,
                         "williams_p": test.williams_p if test else np.nan,
                         "steiger_z": test.steiger_z if test else np.nan,
                         "steiger_p": test.steiger_p if test else np.nan,
                         "zou_low": test.zou_low if test else np.nan,
                         "zou_high": test.zou_high if test else np.nan,
                         "diff_boot_low": boot_diff[0], "diff_boot_high": boot_diff[1],
                         "margin": margin,
                         "p_equivalence": equivalence_p(samples, diff, margin),
                         "p_perception": min(1.0, 2 * bc_one_sided_p(samples, diff, margin)),
                         "in_family": f == "arousal"})
            if f == "arousal":
                scatter.append(d.select("stimulus_id", "x", "y").with_columns(
                    pl.lit(m).alias("model_id")).rename({"x": "arousal_image_label",
                                                         "y": "arousal_label_only"}))
    fam = [r for r in rows if r["in_family"]]
    add_holm(fam, "p_equivalence", "p_equivalence_holm")
    add_holm(fam, "p_perception", "p_perception_holm")
    for r in rows:
        r.setdefault("p_equivalence_holm", np.nan)
        r.setdefault("p_perception_holm", np.nan)
    table = pl.DataFrame(rows)
    verdicts, outcomes = [], []
    for r in fam:
        o = _a1_outcome(r["p_equivalence_holm"], r["p_perception_holm"], ctx.a.alpha)
        outcomes.append(o)
        verdicts.append(
            f"{r['model_id']}: r(human, image) {fmt(r['r_human_image'])} vs r(human, label-only) "
            f"{fmt(r['r_human_label_only'])}, difference {fmt(r['diff_human_r'], 3)} "
            f"[{fmt(r['diff_boot_low'], 3)}, {fmt(r['diff_boot_high'], 3)}] (identity bootstrap;"
            f" Zou [{fmt(r['zou_low'], 3)}, {fmt(r['zou_high'], 3)}], Williams t = "
            f"{fmt(r['williams_t'])}, p = {fmt(r['williams_p'], 3)}); equivalence p = "
            f"{fmt(r['p_equivalence'], 4)} (Holm {fmt(r['p_equivalence_holm'], 4)}), above-margin "
            f"p = {fmt(r['p_perception'], 4)} (Holm {fmt(r['p_perception_holm'], 4)}); "
            f"r(image, label-only) {fmt(r['r_image_label'])} -> {word(o)}")
    return AblationResult(
        "A1", f"A1 (rule: the CI of r(human, image) - r(human, label-only) inside +/-{margin:g} "
        f"=> language prior; above +{margin:g} => perception; family: arousal x "
        f"{len(fam)} model(s), Holm): " + "; ".join(verdicts), combine(outcomes),
        tables={"main": table}, plots={"scatter": pl.concat(scatter)},
        metrics={"margin": margin, "r_high_descriptive": R_HIGH, "rows": table.to_dicts(),
                 "family": "arousal x models"},
        simulated=any_simulated(frames), provenance=provenance(frames))


# --- paired comparisons (A2, A4) --------------------------------------------------------------

def _correct(df: pl.DataFrame) -> np.ndarray:
    return M.label_array(df) == df["intended"].to_numpy()


def _pair_keep(a: pl.DataFrame, b: pl.DataFrame, f: str, g: str) -> np.ndarray:
    """The images both arms rated (and, for the ``correct`` grouping, both labelled correctly)."""
    keep = a[f].is_not_null().to_numpy() & b[f].is_not_null().to_numpy()
    return keep & _correct(a) & _correct(b) if g == "correct" else keep


def _grouped(df, x, g, w, keep, var=False):
    """(point estimate, bootstrap replicates) of a within-category SD (or variance)."""
    point = M.w_grouped_sd(df, x, g, np.ones((1, df.height)), keep, var)[0]
    return float(point), M.w_grouped_sd(df, x, g, w, keep, var)


def _paired_rows(ctx: AnalysisContext, model: str, a: pl.DataFrame, b: pl.DataFrame,
                 label_a: str, label_b: str) -> list[dict]:
    """b - a for kappa, r, MAE, SD and the within-category SD under every grouping, over the
    same images in both arms, with identity-bootstrap BC CIs and p (the images are paired)."""
    if list(a["stimulus_id"]) != list(b["stimulus_id"]):
        raise ValueError("paired arms must list the same stimuli in the same order")
    w = boot_weights(ctx, a["identity"].to_list())
    one = np.ones((1, a.height))
    k = len(ctx.emotions)
    ta, pa = M.label_codes(a, ctx.emotions)
    tb, pb = M.label_codes(b, ctx.emotions)
    est = {"kappa": (M.w_kappa(ta, pa, k, one)[0], M.w_kappa(tb, pb, k, one)[0],
                     M.w_kappa(tb, pb, k, w) - M.w_kappa(ta, pa, k, w))}
    for f in M.FIELDS:
        h = a[f"{f}_mean"].to_numpy().astype(float)
        xa, xb = a[f].to_numpy().astype(float), b[f].to_numpy().astype(float)
        ok = np.isfinite(xa) & np.isfinite(xb)
        ha, wa, onea = h[ok], w[:, ok], one[:, ok]
        for name, fn in (("r", lambda x, ww: M.w_pearson(x, ha, ww)),  # noqa: B023
                         ("mae", lambda x, ww: M.w_mae(x, ha, ww)),  # noqa: B023
                         ("sd", lambda x, ww: M.w_sd(x, ww))):
            est[f"{f}_{name}"] = (fn(xa[ok], onea)[0], fn(xb[ok], onea)[0],
                                  fn(xb[ok], wa) - fn(xa[ok], wa))
        for g in M.GROUPINGS:
            keep = _pair_keep(a, b, f, g)
            pa_, sa = _grouped(a, xa, g, w, keep)
            pb_, sb = _grouped(b, xb, g, w, keep)
            est[f"{f}_{M.GROUPING_COLUMN[g]}"] = (pa_, pb_, sb - sa)
    rows = []
    for key, (va, vb, samples) in est.items():
        d = float(vb - va)
        lo, hi = M.percentile_ci(samples, ctx.a.alpha, d)
        rows.append({"model_id": model, "metric": key, label_a: float(va), label_b: float(vb),
                     "difference": d, "diff_low": lo, "diff_high": hi,
                     "p": bc_pvalue(samples, d)})
    return rows


def _grouping_verdicts(table: pl.DataFrame, units: list[str], field: str, alpha: float,
                       positive_supports: bool = True) -> tuple[dict, dict, pl.DataFrame]:
    """Holm over ``units`` (models or contrasts) per grouping; outcome per grouping and overall.

    Returns ({grouping: overall outcome}, {(unit, grouping): outcome}, the family table)."""
    fam_rows, per = [], {}
    overall = {}
    for g in M.GROUPINGS:
        metric = f"{field}_{M.GROUPING_COLUMN[g]}"
        rows = [table.filter((pl.col("model_id") == u) & (pl.col("metric") == metric))
                .row(0, named=True) for u in units]
        add_holm(rows)
        outs = []
        for r in rows:
            o = p_outcome(r["p_holm"], r["difference"], alpha, positive_supports=positive_supports)
            per[(r["model_id"], g)] = o
            outs.append(o)
            fam_rows.append({**r, "grouping": g, "outcome": o})
        overall[g] = combine(outs)
    return overall, per, pl.DataFrame(fam_rows)


def _definitions_line(overall: dict[str, str]) -> str:
    return ("; by grouping: " + ", ".join(f"{g} {word(o)}" for g, o in overall.items())
            + (" -> definition-sensitive" if len(set(overall.values())) > 1 else ""))


# --- A2 -------------------------------------------------------------------------------------

def a2_single_shot(ctx: AnalysisContext) -> AblationResult:
    """Within-category SD of arousal, single-shot minus context-carry, same images."""
    single = Condition(protocol="single_shot")
    rows, parse, frames = [], [], []
    for m in ctx.models:
        carry, ss = ctx.predictions(m), ctx.predictions(m, single)
        frames += [carry, ss]
        rows += _paired_rows(ctx, m, carry, ss, "context_carry", "single_shot")
        for name, df in (("context_carry", carry), ("single_shot", ss)):
            for f in ("emotion", *M.FIELDS):
                counts = df.group_by(f"{f}_status", maintain_order=True).len()
                parse += [{"model_id": m, "protocol": name, "field": f, "status": s, "n": n}
                          for s, n in counts.iter_rows()]
    table = pl.DataFrame(rows)
    overall, per, fam = _grouping_verdicts(table, list(ctx.models), "arousal", ctx.a.alpha)
    verdicts = []
    for r in fam.filter(pl.col("grouping") == "intended").iter_rows(named=True):
        verdicts.append(f"{r['model_id']}: within-category SD of arousal {fmt(r['context_carry'])}"
                        f" (context-carry) -> {fmt(r['single_shot'])} (single-shot), difference "
                        f"{fmt(r['difference'])} [{fmt(r['diff_low'])}, {fmt(r['diff_high'])}], "
                        f"p = {fmt(r['p'], 4)} (Holm {fmt(r['p_holm'], 4)}) -> "
                        f"{word(r['outcome'])}")
    outcome = across_definitions(overall)
    return AblationResult(
        "A2", "A2 (rule: within-category SD of arousal (intended emotion, same images) rises in "
        f"single-shot => anchoring; family: {len(ctx.models)} model(s), Holm): "
        + "; ".join(verdicts) + _definitions_line(overall), outcome,
        tables={"main": table, "verdict_tests": fam, "parse_outcomes": pl.DataFrame(parse)},
        plots={"paired_differences": table.select("model_id", "metric", "difference",
                                                   "diff_low", "diff_high")},
        metrics={"rows": table.to_dicts(), "outcome_by_grouping": overall,
                 "family": "arousal x models"},
        simulated=any_simulated(frames), provenance=provenance(frames))


# --- A3 -------------------------------------------------------------------------------------

def _a3_conditions(ctx: AnalysisContext) -> list[Condition]:
    """A3's distinct pieces of work: T = 0 repeats are one unless ``t0_repeats: distinct``."""
    grid = ctx.params.ablations.A3
    distinct = grid.t0_repeats == "distinct"
    conds = [Condition(temperature=t, repeat=r, distinct_t0=distinct)
             for t in grid.temperatures for r in range(1, grid.repeats + 1)]
    return list({c.condition_id: c for c in conds}.values())


def a3_temperature(ctx: AnalysisContext) -> AblationResult:
    """Slope of the within-category SD of arousal over temperature, same images everywhere."""
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
        w = boot_weights(ctx, dfs[0]["identity"].to_list())
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
        add_holm(fam)
        for t in fam:
            t["outcome"] = p_outcome(t["p_holm"], t["slope"], ctx.a.alpha)
        overall[g] = combine([t["outcome"] for t in fam])
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
        + _definitions_line(overall) + f". Note: {t0}.", across_definitions(overall),
        tables={"main": summary, "per_repeat": per_repeat, "trend": trend_df},
        plots={"within_category_sd_by_temperature": summary.select(
            "model_id", "temperature", "mean", "sd_over_repeats")},
        metrics={"trend": trend, "summary": summary.to_dicts(), "outcome_by_grouping": overall,
                 "t0_repeats": grid.t0_repeats, "family": "models"},
        simulated=any_simulated(frames), provenance=provenance(frames))


# --- A4 -------------------------------------------------------------------------------------

def a4_contrasts(ctx: AnalysisContext) -> list[tuple[str, str]]:
    """(fp16, quantized) model pairs A4 compares (``A4Params.arms``): FP16 vs the 4-bit QAT
    release (training differs too), and FP16 vs the same weights quantized by the project
    (quantization alone) when the FP16 model is an mlx directory."""
    return [(fp, q) for q, fp in ctx.params.ablations.A4.arms().values()]


def _a4_self_note(ctx: AnalysisContext) -> tuple[str, dict]:
    """The sentence and metrics saying whether the quantization-alone contrast ran."""
    cfg = ctx.params.ablations.A4
    if "self" not in cfg.arms():
        return (". Quantization-alone contrast not run: it needs ablations.A4.fp16 as an mlx "
                "model directory (the project quantizes those weights itself)"), {}
    sq = cfg.self_quantized
    q_id = cfg.arms()["self"][0]
    return (f". Quantization alone = {q_id} (the FP16 weights quantized here, {sq.bits}-bit, "
            f"group {sq.group_size})"), {"self_quantized": {"model_id": q_id, "bits": sq.bits,
                                                             "group_size": sq.group_size}}


def _range_word(lo: float, hi: float, rng: tuple[float, float] = PLAN_RANGE) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "cannot be compared with"
    if lo >= rng[0] and hi <= rng[1]:
        return "inside"
    if hi < rng[0]:
        return "below"
    if lo > rng[1]:
        return "above"
    return "overlaps"


def a4_quantization(ctx: AnalysisContext) -> AblationResult:
    """Share of within-category variance restored at FP16: 1 - WCV(q4) / WCV(fp16), WCV = mean
    within-category variance, same images in both arms."""
    rows, restored_rows, frames = [], [], []
    for fp16_id, q4_id in a4_contrasts(ctx):
        q4, fp16 = ctx.predictions(q4_id), ctx.predictions(fp16_id)
        frames += [q4, fp16]
        name = f"{q4_id} vs {fp16_id}"
        rows += _paired_rows(ctx, name, q4, fp16, "q4", "fp16")
        w = boot_weights(ctx, q4["identity"].to_list())
        for f in M.FIELDS:
            xq, xf = q4[f].to_numpy().astype(float), fp16[f].to_numpy().astype(float)
            for g in M.GROUPINGS:
                keep = _pair_keep(q4, fp16, f, g)
                vq, sq = _grouped(q4, xq, g, w, keep, var=True)
                vf, sf = _grouped(fp16, xf, g, w, keep, var=True)
                point = 1 - vq / vf if vf > 0 else np.nan
                with np.errstate(invalid="ignore", divide="ignore"):
                    samples = 1 - sq / sf
                lo, hi = M.percentile_ci(samples, ctx.a.alpha, point)
                restored_rows.append({
                    "model_id": name, "field": f, "grouping": g, "wcv_q4": vq, "wcv_fp16": vf,
                    "restored": point, "restored_low": lo, "restored_high": hi,
                    "p": bc_pvalue(samples, point), "plan_range": _range_word(lo, hi)})
    table = pl.DataFrame(rows)
    overall = {}
    for g in M.GROUPINGS:
        fam = [r for r in restored_rows if r["field"] == "arousal" and r["grouping"] == g]
        add_holm(fam)
        for r in fam:
            r["outcome"] = p_outcome(r["p_holm"], r["restored"], ctx.a.alpha)
        overall[g] = combine([r["outcome"] for r in fam])
    for r in restored_rows:
        r.setdefault("p_holm", np.nan)
        r.setdefault("outcome", "")
    restored = pl.DataFrame(restored_rows)
    verdicts = [f"{r['model_id']}: share of within-category arousal variance restored at FP16 "
                f"{fmt(100 * r['restored'], 1)} % [{fmt(100 * r['restored_low'], 1)}, "
                f"{fmt(100 * r['restored_high'], 1)}], p = {fmt(r['p'], 4)} (Holm "
                f"{fmt(r['p_holm'], 4)}) -> {word(r['outcome'])} the quantization account; the CI "
                f"{RANGE_PHRASE.get(r['plan_range'], r['plan_range'])} the plan's 20-30 % "
                "estimate"
                for r in restored_rows if r["field"] == "arousal" and r["grouping"] == "intended"]
    return AblationResult(
        "A4", "A4 (rule: share of within-category variance (intended emotion, same images) "
        "restored at FP16 > 0 => quantization removes variance; the CI compared with the plan's "
        f"20-30 %; family: {len(a4_contrasts(ctx))} contrast(s), Holm): " + "; ".join(verdicts)
        + _definitions_line(overall) + _a4_self_note(ctx)[0], across_definitions(overall),
        tables={"main": restored, "paired": table},
        plots={"paired_differences": table.select("metric", "difference", "diff_low",
                                                   "diff_high")},
        # nested dicts of numbers (DVC metrics show dicts, not lists): contrast/field/grouping
        metrics={"variance_restored": {
            r["model_id"]: {f: {g: {"point": x["restored"], "low": x["restored_low"],
                                    "high": x["restored_high"], "p_holm": x["p_holm"]}
                                for x in restored_rows if x["model_id"] == r["model_id"]
                                and x["field"] == f for g in [x["grouping"]]}
                            for f in M.FIELDS} for r in restored_rows},
                 "restored_rows": restored.to_dicts(), "rows": table.to_dicts(),
                 "outcome_by_grouping": overall, "plan_range": list(PLAN_RANGE),
                 "family": "arousal x contrasts", **_a4_self_note(ctx)[1]},
        simulated=any_simulated(frames), provenance=provenance(frames))


# --- A6 -------------------------------------------------------------------------------------

def a6_more_models(ctx: AnalysisContext) -> AblationResult:
    """Per model: the ratio of its within-category SD of arousal to the humans' over the same
    images and groups, with an identity-bootstrap CI; the pattern generalises when N >= 4 and
    every model's ratio is below 1 (Holm over models)."""
    models = list(dict.fromkeys([*ctx.models, *ctx.params.ablations.A6.models]))
    n_boot = ctx.a.secondary_bootstrap
    frames = {(m, BASELINE.condition_id): ctx.predictions(m) for m in models}
    table = M.metrics_table(frames, ctx.emotions, alpha=ctx.a.alpha, n_boot=n_boot,
                            seed=ctx.a.seed)
    human = M.human_within_category_sd(next(iter(frames.values())))
    ratios = []
    for (m, _), df in frames.items():
        w = boot_weights(ctx, df["identity"].to_list(), n_boot)
        x = df["arousal"].to_numpy().astype(float)
        h = df["arousal_mean"].to_numpy().astype(float)
        keep = np.isfinite(x)
        for g in M.GROUPINGS:
            pm, sm = _grouped(df, x, g, w, keep)
            ph, sh = _grouped(df, h, g, w, keep)
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
        add_holm(fam)
        for r in fam:
            r["collapsed"] = bool(r["p_holm"] < ctx.a.alpha and r["ratio"] < 1)
            r["wider"] = bool(r["p_holm"] < ctx.a.alpha and r["ratio"] > 1)
        n_col = sum(r["collapsed"] for r in fam)
        overall[g] = (CANNOT_TELL if n < 4 else SUPPORTS if n_col == n
                      else NOT_SUPPORTED if any(r["wider"] for r in fam) else CANNOT_TELL)
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
               f"{fmt(table['kappa'].max())}" + _definitions_line(overall))
    return AblationResult("A6", verdict, across_definitions(overall),
                          tables={"main": table, "sd_ratios": ratio_df},
                          plots={"models": table.select("model_id", "kappa",
                                                        "arousal_within_category_sd",
                                                        "arousal_sd_ratio_human")},
                          metrics={"n_models": n, "human_within_category_sd": human,
                                   "collapsed_by_grouping": counts,
                                   "outcome_by_grouping": overall, "family": "models",
                                   "rows": table.to_dicts(), "ratios": ratio_df.to_dicts()},
                          simulated=bool(table["simulated"].any()),
                          provenance=provenance(list(frames.values())))


# --- A7 -------------------------------------------------------------------------------------

def a7_real_faces(ctx: AnalysisContext) -> AblationResult:
    """kappa on AI minus real faces with an independent (two-sample) identity bootstrap CI."""
    real = ctx.params.real_faces.name
    models = list(dict.fromkeys([*ctx.models, *ctx.params.models.fer]))
    n_boot = ctx.a.secondary_bootstrap
    rows, frames, diffs = [], [], []
    k = len(ctx.emotions)
    for m in models:
        kap = {}
        for j, name in enumerate((ctx.params.stimuli.set_name, real)):
            df = ctx.predictions(m, set_name=name)
            frames.append(df)
            met = M.core_metrics(df, ctx.emotions, alpha=ctx.a.alpha, n_boot=n_boot,
                                 seed=ctx.a.seed)
            t, p = M.label_codes(df, ctx.emotions)
            # independent resamples of the two sets (different seeds)
            w = M.cluster_weights(df["identity"].to_list(), n_boot, ctx.a.seed + 1000 * j)
            kap[j] = (met["kappa"], M.w_kappa(t, p, k, w))
            has_norms = df["valence_mean"].is_not_null().any()
            rows.append({"model_id": m, "stimulus_set": name,
                         "faces": "AI (synthetic)" if name == ctx.params.stimuli.set_name
                         else ("real (DEMO: synthetic stand-in)"
                               if (df["source"] == "synthetic_demo").all() else "real"),
                         "has_norms": bool(has_norms), **met})
        d = kap[0][0] - kap[1][0]
        samples = kap[0][1] - kap[1][1]
        lo, hi = M.percentile_ci(samples, ctx.a.alpha, d)
        diffs.append({"model_id": m, "kappa_ai": kap[0][0], "kappa_real": kap[1][0],
                      "difference": d, "diff_low": lo, "diff_high": hi,
                      "p": bc_pvalue(samples, d)})
    add_holm(diffs)
    table = pl.DataFrame(rows)
    demo = (ctx.stimuli(real).manifest["source"] == "synthetic_demo").all()
    verdicts, outcomes = [], []
    if demo:
        verdicts.append(f"NOTE: '{real}' is a synthetic stand-in in FER-2013 format "
                        "(source = synthetic_demo), not real faces; point params.yaml real_faces "
                        "at a real FER-2013 CSV or AffectNet folder to run A7 for real")
    for r in diffs:
        o = SUPPORTS if np.isfinite(r["p_holm"]) and r["p_holm"] < ctx.a.alpha else CANNOT_TELL
        o = CANNOT_TELL if demo else o
        r["outcome"] = o
        outcomes.append(o)
        rl = table.filter((pl.col("model_id") == r["model_id"])
                          & (pl.col("stimulus_set") == real)).row(0, named=True)
        note = "" if rl["has_norms"] else " (the real set has no valence/arousal norms: " \
                                          "rating metrics not computed for it)"
        verdicts.append(f"{r['model_id']}: kappa AI {fmt(r['kappa_ai'])} vs real "
                        f"{fmt(r['kappa_real'])}, difference {fmt(r['difference'])} "
                        f"[{fmt(r['diff_low'])}, {fmt(r['diff_high'])}] (independent identity "
                        f"bootstrap), p = {fmt(r['p'], 4)} (Holm {fmt(r['p_holm'], 4)}){note}"
                        f" -> {word(o)}")
    diff_df = pl.DataFrame(diffs)
    return AblationResult(
        "A7", "A7 (rule: the CI of kappa(AI) - kappa(real) excludes 0 after Holm => OOD effect;"
        f" family: {len(models)} model(s)): " + "; ".join(verdicts), combine(outcomes),
        tables={"main": table, "kappa_difference": diff_df}, plots={"ai_vs_real": table.select(
            "model_id", "faces", "accuracy", "kappa", "kappa_boot_low", "kappa_boot_high")},
        metrics={"rows": table.to_dicts(), "kappa_difference": diff_df.to_dicts(),
                 "family": "models"},
        simulated=any_simulated(frames), provenance=provenance(frames))


def run_analysis(ablation_id: str, ctx: AnalysisContext) -> AblationResult:
    """Run one analysis by id: the ablation registry's entry point (kept here for callers)."""
    from emoface.ablations import run_analysis as run  # the registry imports this module lazily

    return run(ablation_id, ctx)
