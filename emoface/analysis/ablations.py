"""The baseline tables and the nine ablation analyses.

Each function takes an :class:`AnalysisContext` and returns an :class:`AblationResult`: tidy tables
(the ``main`` one is published as the Prefect artifact), JSON metrics (DVC metrics), plot tables
(DVC plots, CSV), and a verdict that applies the plan's interpretation rule to the measured effect
and its CI — "supports", "does not support", or "cannot tell".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from emoface.ablations import BASELINE, REGISTRY
from emoface.analysis import metrics as M
from emoface.analysis.context import AnalysisContext
from emoface.analysis.stats import (
    compare_dependent_correlations,
    debiased_cka,
    debiased_cka_permutations,
    linear_cka,
    pearson_with_ci,
    permutation_p,
)
from emoface.inference.conditions import Condition

R_HIGH = 0.7  # A1: "high" label-only correlation, stated in advance


@dataclass
class AblationResult:
    ablation_id: str
    verdict: str
    outcome: str  # supports | does_not_support | cannot_tell | not_applicable
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    plots: dict[str, pl.DataFrame] = field(default_factory=dict)
    simulated: bool = True  # True when ANY number in it comes from the simulated backend
    provenance: dict = field(default_factory=dict)


EPS = 1e-9  # a CI bound within floating-point noise of 0 counts as 0


def _outcome(low: float, high: float, *, positive_supports: bool = True) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "cannot_tell"
    if low > EPS:
        return "supports" if positive_supports else "does_not_support"
    if high < -EPS:
        return "does_not_support" if positive_supports else "supports"
    return "cannot_tell"


def _fmt(x: float, d: int = 2) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def _provenance(frames: list[pl.DataFrame]) -> dict:
    cols = ["model_id", "backend", "model_digest", "backend_version", "quantization",
            "prompt_version", "parser_version", "simulated"]
    # sorted on every column: identical inputs must give byte-identical metrics.json
    rows = pl.concat([f.select(cols).unique() for f in frames]).unique().sort(cols)
    return {"models": rows.to_dicts()}


def _boot(ctx: AnalysisContext, identities) -> np.ndarray:
    return M.cluster_weights(identities, ctx.a.bootstrap, ctx.a.seed)


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
    lines = [f"{r['model_id']}: accuracy {_fmt(r['accuracy'])}, kappa {_fmt(r['kappa'])} "
             f"[{_fmt(r['kappa_low'])}, {_fmt(r['kappa_high'])}], "
             + ("no valence/arousal (a classifier)" if r["model_id"].startswith("fer/") else
                f"arousal r {_fmt(r['arousal_r'])}, within-category SD arousal "
                f"{_fmt(r['arousal_within_category_sd'])} (humans {_fmt(human['arousal'])})")
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
        provenance=_provenance(list(frames.values())))


# --- A1 -------------------------------------------------------------------------------------

def a1_text_only(ctx: AnalysisContext) -> AblationResult:
    text = Condition(protocol="text_only", label_source=ctx.params.ablations.A1.label_source)
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
            w = _boot(ctx, d["identity"].to_list())
            boot_xy = M.percentile_ci(M.w_pearson(x, y, w), ctx.a.alpha, r_xy)
            boot_diff = M.percentile_ci(M.w_pearson(h, x, w) - M.w_pearson(h, y, w), ctx.a.alpha,
                                        r_hx - r_hy)
            rows.append({"model_id": m, "field": f, "n": len(x), "r_image_label": r_xy,
                         "r_image_label_low": lo_xy, "r_image_label_high": hi_xy,
                         "r_image_label_boot_low": boot_xy[0],
                         "r_image_label_boot_high": boot_xy[1],
                         "r_human_image": r_hx, "r_human_label_only": r_hy,
                         "diff_human_r": r_hx - r_hy,
                         "williams_t": test.williams_t if test else np.nan,
                         "williams_p": test.williams_p if test else np.nan,
                         "steiger_z": test.steiger_z if test else np.nan,
                         "steiger_p": test.steiger_p if test else np.nan,
                         "zou_low": test.zou_low if test else np.nan,
                         "zou_high": test.zou_high if test else np.nan,
                         "diff_boot_low": boot_diff[0], "diff_boot_high": boot_diff[1]})
            if f == "arousal":
                scatter.append(d.select("stimulus_id", "x", "y").with_columns(
                    pl.lit(m).alias("model_id")).rename({"x": "arousal_image_label",
                                                         "y": "arousal_label_only"}))
    table = pl.DataFrame(rows)
    arousal = table.filter(pl.col("field") == "arousal")
    verdicts, outcomes = [], []
    for r in arousal.iter_rows(named=True):
        lo, hi = r["r_image_label_boot_low"], r["r_image_label_boot_high"]
        o = "supports" if lo >= R_HIGH else ("does_not_support" if hi < R_HIGH else "cannot_tell")
        outcomes.append(o)
        verdicts.append(f"{r['model_id']}: label-only arousal tracks image arousal, r = "
                        f"{_fmt(r['r_image_label'])} [{_fmt(lo)}, {_fmt(hi)}] (identity bootstrap)"
                        f"; human r image {_fmt(r['r_human_image'])} vs label-only "
                        f"{_fmt(r['r_human_label_only'])}, Williams t = {_fmt(r['williams_t'])}, "
                        f"p = {_fmt(r['williams_p'], 3)} -> {o.replace('_', ' ')}")
    outcome = outcomes[0] if len(set(outcomes)) == 1 else "cannot_tell"
    return AblationResult(
        "A1", f"A1 (rule: r >= {R_HIGH} => language prior): " + "; ".join(verdicts), outcome,
        tables={"main": table}, plots={"scatter": pl.concat(scatter)},
        metrics={"r_high_threshold": R_HIGH, "rows": table.to_dicts()},
        simulated=any(bool(f["simulated"].any()) for f in frames), provenance=_provenance(frames))


# --- A2 -------------------------------------------------------------------------------------

def _paired_diffs(ctx: AnalysisContext, a: pl.DataFrame, b: pl.DataFrame,
                  point: dict[str, float]) -> dict[str, tuple]:
    """Bootstrap CIs of b - a for kappa, r, MAE, SD, within-category SD (same stimuli, paired)."""
    w = _boot(ctx, a["identity"].to_list())
    out = {}
    ta, pa = M.label_codes(a, ctx.emotions)
    tb, pb = M.label_codes(b, ctx.emotions)
    k = len(ctx.emotions)
    out["kappa"] = M.w_kappa(tb, pb, k, w) - M.w_kappa(ta, pa, k, w)
    la, lb = M.label_array(a), M.label_array(b)
    for f in M.FIELDS:
        h = a[f"{f}_mean"].to_numpy().astype(float)
        xa = a[f].to_numpy().astype(float)
        xb = b[f].to_numpy().astype(float)
        ok = np.isfinite(xa) & np.isfinite(xb)
        wa = w[:, ok]
        out[f"{f}_r"] = M.w_pearson(xb[ok], h[ok], wa) - M.w_pearson(xa[ok], h[ok], wa)
        out[f"{f}_mae"] = M.w_mae(xb[ok], h[ok], wa) - M.w_mae(xa[ok], h[ok], wa)
        out[f"{f}_sd"] = M.w_sd(xb[ok], wa) - M.w_sd(xa[ok], wa)
        out[f"{f}_within_category_sd"] = M.w_label_sd(xb, lb, w) - M.w_label_sd(xa, la, w)
    return {key: M.percentile_ci(v, ctx.a.alpha, point.get(key)) for key, v in out.items()}


def _paired_table(ctx, model, a, b, label_a, label_b) -> list[dict]:
    ma = M.core_metrics(a, ctx.emotions, alpha=ctx.a.alpha, n_boot=200, seed=ctx.a.seed)
    mb = M.core_metrics(b, ctx.emotions, alpha=ctx.a.alpha, n_boot=200, seed=ctx.a.seed)
    point = {k: mb[k] - ma[k] for k in ("kappa", *(f"{f}_{m}" for f in M.FIELDS for m in (
        "r", "mae", "sd", "within_category_sd")))}
    cis = _paired_diffs(ctx, a, b, point)
    return [{"model_id": model, "metric": key, label_a: ma[key], label_b: mb[key],
             "difference": point[key], "diff_low": lo, "diff_high": hi}
            for key, (lo, hi) in cis.items()]


def a2_single_shot(ctx: AnalysisContext) -> AblationResult:
    single = Condition(protocol="single_shot")
    rows, parse, frames, verdicts, outcomes = [], [], [], [], []
    for m in ctx.models:
        carry, ss = ctx.predictions(m), ctx.predictions(m, single)
        frames += [carry, ss]
        rows += _paired_table(ctx, m, carry, ss, "context_carry", "single_shot")
        for name, df in (("context_carry", carry), ("single_shot", ss)):
            for f in ("emotion", *M.FIELDS):
                counts = df.group_by(f"{f}_status", maintain_order=True).len()
                parse += [{"model_id": m, "protocol": name, "field": f, "status": s, "n": n}
                          for s, n in counts.iter_rows()]
    table = pl.DataFrame(rows)
    for m in ctx.models:
        r = table.filter((pl.col("model_id") == m)
                         & (pl.col("metric") == "arousal_within_category_sd")).row(0, named=True)
        o = _outcome(r["diff_low"], r["diff_high"])
        outcomes.append(o)
        verdicts.append(f"{m}: within-category SD of arousal {_fmt(r['context_carry'])} "
                        f"(context-carry) -> {_fmt(r['single_shot'])} (single-shot), difference "
                        f"{_fmt(r['difference'])} [{_fmt(r['diff_low'])}, {_fmt(r['diff_high'])}]"
                        f" -> {o.replace('_', ' ')}")
    return AblationResult(
        "A2", "A2 (rule: within-category SD rises in single-shot => anchoring): "
        + "; ".join(verdicts), outcomes[0] if len(set(outcomes)) == 1 else "cannot_tell",
        tables={"main": table, "parse_outcomes": pl.DataFrame(parse)},
        plots={"paired_differences": table.select("model_id", "metric", "difference",
                                                   "diff_low", "diff_high")},
        metrics={"rows": table.to_dicts()},
        simulated=any(bool(f["simulated"].any()) for f in frames), provenance=_provenance(frames))


# --- A3 -------------------------------------------------------------------------------------

def a3_temperature(ctx: AnalysisContext) -> AblationResult:
    grid = ctx.params.ablations.A3
    rows, agree, frames = [], [], []
    for m in ctx.models:
        for t in grid.temperatures:
            reps = sorted({Condition(temperature=t, repeat=r).work().repeat
                           for r in range(1, grid.repeats + 1)})
            dfs = [ctx.predictions(m, Condition(temperature=t, repeat=r)) for r in reps]
            frames += dfs
            for r, df in zip(reps, dfs, strict=True):
                rows.append({"model_id": m, "temperature": t, "repeat": r,
                             **{f"{f}_within_category_sd": M.within_category_sd(df, f)
                                for f in M.FIELDS}})
            stacked = pl.concat([d.select("stimulus_id", "arousal") for d in dfs])
            same = stacked.group_by("stimulus_id", maintain_order=True).agg(pl.col("arousal").n_unique() == 1)
            agree.append({"model_id": m, "temperature": t, "n_repeats": len(reps),
                          "share_all_repeats_agree": float(same["arousal"].mean())})
    per_repeat = pl.DataFrame(rows)
    summary = per_repeat.group_by("model_id", "temperature", maintain_order=True).agg(
        pl.col("arousal_within_category_sd").mean().alias("mean"),
        pl.col("arousal_within_category_sd").std().alias("sd_over_repeats"),
        pl.len().alias("n_repeats")).sort("model_id", "temperature").join(
        pl.DataFrame(agree), on=["model_id", "temperature"])
    verdicts, outcomes, trend = [], [], []
    for m in ctx.models:
        d = per_repeat.filter(pl.col("model_id") == m).to_pandas()
        fit = smf.ols("arousal_within_category_sd ~ temperature", d).fit()
        # The CI of the slope resamples identities (the same stimuli serve every temperature, so
        # repeat-to-repeat variation alone would understate the uncertainty).
        conds = [(t, r) for t in grid.temperatures
                 for r in sorted({Condition(temperature=t, repeat=k).work().repeat
                                  for k in range(1, grid.repeats + 1)})]
        dfs = [ctx.predictions(m, Condition(temperature=t, repeat=r)) for t, r in conds]
        w = _boot(ctx, dfs[0]["identity"].to_list())
        sds = np.stack([M.w_label_sd(df["arousal"].to_numpy().astype(float), M.label_array(df), w)
                        for df in dfs], axis=1)  # (B, conditions)
        temps = np.array([t for t, _ in conds])
        tc = temps - temps.mean()
        slopes = ((sds - sds.mean(axis=1, keepdims=True)) * tc).sum(axis=1) / (tc**2).sum()
        lo, hi = M.percentile_ci(slopes, ctx.a.alpha, float(fit.params["temperature"]))
        o = _outcome(lo, hi)
        outcomes.append(o)
        trend.append({"model_id": m, "slope": fit.params["temperature"], "slope_low": lo,
                      "slope_high": hi, "ols_p": fit.pvalues["temperature"]})
        verdicts.append(f"{m}: within-category SD of arousal rises by "
                        f"{_fmt(fit.params['temperature'])} per unit T [{_fmt(lo)}, {_fmt(hi)}] "
                        f"(identity bootstrap), OLS trend p = {_fmt(fit.pvalues['temperature'], 3)}"
                        f" -> {o.replace('_', ' ')}")
    return AblationResult(
        "A3", "A3 (rule: SD rises with T => output constraint): " + "; ".join(verdicts),
        outcomes[0] if len(set(outcomes)) == 1 else "cannot_tell",
        tables={"main": summary, "per_repeat": per_repeat, "trend": pl.DataFrame(trend)},
        plots={"within_category_sd_by_temperature": summary.select(
            "model_id", "temperature", "mean", "sd_over_repeats")},
        metrics={"trend": trend, "summary": summary.to_dicts()},
        simulated=any(bool(f["simulated"].any()) for f in frames), provenance=_provenance(frames))


# --- A4 -------------------------------------------------------------------------------------

def _a4_contrast(ctx: AnalysisContext, q_id: str, fp_id: str, q_name: str):
    """One A4 contrast: paired table and the share of within-category variance restored at FP16."""
    q4, fp16 = ctx.predictions(q_id), ctx.predictions(fp_id)
    rows = _paired_table(ctx, f"{q_id} vs {fp_id}", q4, fp16, q_name, "fp16")
    # share of within-category variance restored at FP16: 1 - WCV(4-bit) / WCV(FP16)
    w = _boot(ctx, q4["identity"].to_list())
    restored = {}
    for f in M.FIELDS:
        va = M.w_label_sd(q4[f].to_numpy().astype(float), M.label_array(q4), w) ** 2
        vb = M.w_label_sd(fp16[f].to_numpy().astype(float), M.label_array(fp16), w) ** 2
        sd_fp16 = M.within_category_sd(fp16, f)
        # undefined (NaN) when FP16 has no within-category variance to restore
        point = 1 - M.within_category_sd(q4, f) ** 2 / sd_fp16**2 if sd_fp16 > 0 else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            restored[f] = (point, *M.percentile_ci(1 - va / vb, ctx.a.alpha, point))
    return pl.DataFrame(rows), restored, [q4, fp16]


def a4_quantization(ctx: AnalysisContext) -> AblationResult:
    """Contrasts (``A4Params.arms``): ``qat`` = FP16 vs the 4-bit QAT release (training differs too);
    ``self`` = FP16 vs the same weights quantized here (quantization alone), when run."""
    cfg = ctx.params.ablations.A4
    arms = cfg.arms()
    table, restored, frames = _a4_contrast(ctx, *arms["qat"], "q4")
    p, lo, hi = restored["arousal"]
    o = _outcome(lo, hi)
    verdict = (f"A4 (plan's estimate: 20-30 % of variance restored at FP16): share of within-category "
               f"arousal variance restored {_fmt(100 * p, 1)} % [{_fmt(100 * lo, 1)}, "
               f"{_fmt(100 * hi, 1)}] -> {o.replace('_', ' ')} the quantization account; "
               f"{'inside' if lo <= 0.3 and hi >= 0.2 else 'not inside'} the 20-30 % estimate")
    tables = {"main": table}
    metrics: dict = {"variance_restored": {f: dict(zip(("point", "low", "high"), v, strict=True))
                                           for f, v in restored.items()}, "rows": table.to_dicts()}
    if "self" in arms:
        sq = cfg.self_quantized
        s_table, s_restored, s_frames = _a4_contrast(ctx, *arms["self"], "q4")
        sp, slo, shi = s_restored["arousal"]
        verdict += (f". Quantization alone (the FP16 weights quantized here, {sq.bits}-bit, group "
                    f"{sq.group_size}): {_fmt(100 * sp, 1)} % [{_fmt(100 * slo, 1)}, "
                    f"{_fmt(100 * shi, 1)}] -> {_outcome(slo, shi).replace('_', ' ')}")
        tables["main"] = pl.concat([table, s_table])  # both contrasts, told apart by model_id
        metrics["self_quantized"] = {
            "bits": sq.bits, "group_size": sq.group_size, "rows": s_table.to_dicts(),
            "variance_restored": {f: dict(zip(("point", "low", "high"), v, strict=True))
                                  for f, v in s_restored.items()}}
        frames += s_frames[:1]
    else:
        verdict += (". Quantization-alone contrast not run: it needs ablations.A4.fp16 as an mlx "
                    "model directory (the project quantizes those weights itself)")
    return AblationResult(
        "A4", verdict, o, tables=tables,
        plots={"paired_differences": table.select("metric", "difference", "diff_low",
                                                   "diff_high")},
        metrics=metrics,  # "rows"/"variance_restored": the QAT contrast; "self_quantized": the other
        simulated=any(bool(f["simulated"].any()) for f in frames),
        provenance=_provenance(frames))


# --- A5 -------------------------------------------------------------------------------------

def digit_table(ctx: AnalysisContext, model: str) -> pl.DataFrame:
    """Per (stimulus, field): 9-digit distribution summary at the rating step."""
    lg = ctx.logits(model)
    rating = np.isin(lg["field"], ("valence", "arousal"))
    lg = {k: v[rating] for k, v in lg.items()}
    lp = lg["digit_logprobs"]
    known = np.isfinite(lp)
    with np.errstate(invalid="ignore"):
        mass = np.where(known, np.exp(np.where(known, lp, -np.inf)), 0.0).sum(axis=1)
        p = np.where(known, np.exp(np.where(known, lp, -np.inf)), 0.0)
        p = p / np.where(mass > 0, mass, np.nan)[:, None]
        ent = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0)).sum(axis=1)
    digits = np.arange(1, 10)
    return pl.DataFrame({
        "stimulus_id": lg["stimulus_id"], "field": lg["field"],
        "entropy": np.where(mass > 0, ent, np.nan), "expected": (p * digits).sum(axis=1),
        "argmax": np.where(mass > 0, np.nanargmax(np.where(known, lp, -np.inf), axis=1) + 1,
                           -1).astype(float),
        "digit_mass": mass, "n_missing": (~known).sum(axis=1),
        "flagged": mass < ctx.a.digit_mass_threshold,
    }).with_columns(pl.col("argmax").replace(-1.0, None), pl.lit(model).alias("model_id"))


def a5_dark_knowledge(ctx: AnalysisContext) -> AblationResult:
    per_image, summary, diffs, frames = [], [], [], []
    for m in ctx.models:
        preds = ctx.predictions(m)
        frames.append(preds)
        # the category is the model's own label (see emoface.analysis.metrics)
        design = preds.filter(pl.col("emotion_status").is_in(M.USABLE)).select(
            "stimulus_id", pl.col("emotion").alias("category"), "identity")
        d = digit_table(ctx, m).join(design, on="stimulus_id")
        per_image.append(d)
        ok = d.filter(~pl.col("flagged"))
        summary.append(ok.group_by("model_id", "field", "category", maintain_order=True).agg(
            pl.col("entropy").mean().alias("mean_entropy_nats"),
            pl.col("expected").std().alias("sd_expected"),
            pl.col("argmax").std().alias("sd_argmax"),
            pl.col("digit_mass").mean().alias("mean_digit_mass"), pl.len().alias("n"))
            .join(d.group_by("model_id", "field", "category", maintain_order=True).agg(
                pl.col("flagged").sum().alias("n_flagged")),
                on=["model_id", "field", "category"]))
        for f in M.FIELDS:
            sub = ok.filter(pl.col("field") == f).drop_nulls("argmax")
            w = _boot(ctx, sub["identity"].to_list())
            cat = sub["category"].to_numpy()
            e, a = sub["expected"].to_numpy(), sub["argmax"].to_numpy()
            boot = M.w_within_category_sd(e, cat, w) - M.w_within_category_sd(a, cat, w)
            lo, hi = M.percentile_ci(boot, ctx.a.alpha,
                                     M.within_category_sd(sub, "expected", by="category")
                                     - M.within_category_sd(sub, "argmax", by="category"))
            diffs.append({"model_id": m, "field": f,
                          "within_category_sd_expected": M.within_category_sd(
                              sub, "expected", by="category"),
                          "within_category_sd_argmax": M.within_category_sd(
                              sub, "argmax", by="category"),
                          "diff_low": lo, "diff_high": hi,
                          "mean_entropy_nats": float(sub["entropy"].mean()),
                          "n_flagged": int(d.filter(pl.col("field") == f)["flagged"].sum())})
    table = pl.DataFrame(diffs)
    summ = pl.concat(summary).sort("model_id", "field", "category")
    verdicts, outcomes = [], []
    for r in table.filter(pl.col("field") == "arousal").iter_rows(named=True):
        o = _outcome(r["diff_low"], r["diff_high"])
        o = o if r["mean_entropy_nats"] > 0.05 else "does_not_support"
        outcomes.append(o)
        verdicts.append(f"{r['model_id']}: mean entropy {_fmt(r['mean_entropy_nats'])} nats "
                        f"(max 2.20); within-category SD of the expected arousal "
                        f"{_fmt(r['within_category_sd_expected'])} vs argmax "
                        f"{_fmt(r['within_category_sd_argmax'])}, difference CI "
                        f"[{_fmt(r['diff_low'])}, {_fmt(r['diff_high'])}] -> "
                        f"{o.replace('_', ' ')}")
    return AblationResult(
        "A5", "A5 (rule: entropy > 0 and expected ratings varying inside a category => "
        "output-level collapse): " + "; ".join(verdicts),
        outcomes[0] if len(set(outcomes)) == 1 else "cannot_tell",
        tables={"main": table, "by_category": summ, "per_image": pl.concat(per_image)},
        plots={"entropy_by_category": summ.select("model_id", "field", "category",
                                                  "mean_entropy_nats", "sd_expected", "sd_argmax")},
        metrics={"rows": table.to_dicts()},
        simulated=any(bool(f["simulated"].any()) for f in frames), provenance=_provenance(frames))


# --- A6 -------------------------------------------------------------------------------------

def a6_more_models(ctx: AnalysisContext) -> AblationResult:
    models = list(dict.fromkeys([*ctx.models, *ctx.params.ablations.A6.models]))
    frames = {(m, BASELINE.condition_id): ctx.predictions(m) for m in models}
    table = M.metrics_table(frames, ctx.emotions, alpha=ctx.a.alpha, n_boot=500, seed=ctx.a.seed)
    human = M.human_within_category_sd(next(iter(frames.values())))
    table = table.with_columns(
        (pl.col("arousal_within_category_sd") / human["arousal"]).alias("arousal_sd_ratio_human"))
    collapsed = table.filter(pl.col("arousal_sd_ratio_human") < 1).height
    n = table.height
    o = "supports" if n >= 4 and collapsed == n else ("cannot_tell" if n < 4 else
                                                        "does_not_support")
    verdict = (f"A6 (rule: the same pattern across N >= 4 models => it generalises): {collapsed} of "
               f"{n} models rate arousal with less within-category spread than humans (ratio range "
               f"{_fmt(table['arousal_sd_ratio_human'].min())}-"
               f"{_fmt(table['arousal_sd_ratio_human'].max())}); kappa range "
               f"{_fmt(table['kappa'].min())}-{_fmt(table['kappa'].max())} -> "
               f"{o.replace('_', ' ')}")
    return AblationResult("A6", verdict, o, tables={"main": table},
                          plots={"models": table.select("model_id", "kappa",
                                                        "arousal_within_category_sd",
                                                        "arousal_sd_ratio_human")},
                          metrics={"n_models": n, "human_within_category_sd": human,
                                   "rows": table.to_dicts()},
                          simulated=bool(table["simulated"].any()),
                          provenance=_provenance(list(frames.values())))


# --- A7 -------------------------------------------------------------------------------------

def a7_real_faces(ctx: AnalysisContext) -> AblationResult:
    real = ctx.params.real_faces.name
    models = list(dict.fromkeys([*ctx.models, *ctx.params.models.fer]))
    rows, frames = [], []
    for m in models:
        for name in (ctx.params.stimuli.set_name, real):
            df = ctx.predictions(m, set_name=name)
            frames.append(df)
            met = M.core_metrics(df, ctx.emotions, alpha=ctx.a.alpha, n_boot=500,
                                 seed=ctx.a.seed)
            has_norms = df["valence_mean"].is_not_null().any()
            rows.append({"model_id": m, "stimulus_set": name,
                         "faces": "AI (synthetic)" if name == ctx.params.stimuli.set_name
                         else ("real (DEMO: synthetic stand-in)"
                               if (df["source"] == "synthetic_demo").all() else "real"),
                         "has_norms": bool(has_norms), **met})
    table = pl.DataFrame(rows)
    demo = (ctx.stimuli(real).manifest["source"] == "synthetic_demo").all()
    verdicts, outcomes = [], []
    if demo:
        verdicts.append(f"NOTE: '{real}' is a synthetic stand-in in FER-2013 format "
                        "(source = synthetic_demo), not real faces; point params.yaml real_faces "
                        "at a real FER-2013 CSV or AffectNet folder to run A7 for real")
    for m in models:
        t = table.filter(pl.col("model_id") == m)
        ai, rl = t.row(0, named=True), t.row(1, named=True)
        overlap = not (ai["kappa_boot_low"] > rl["kappa_boot_high"]
                       or rl["kappa_boot_low"] > ai["kappa_boot_high"])
        o = "cannot_tell" if overlap else "supports"
        o = "cannot_tell" if demo else o
        outcomes.append(o)
        note = "" if rl["has_norms"] else " (the real set has no valence/arousal norms: " \
                                          "rating metrics not computed for it)"
        verdicts.append(f"{m}: kappa AI {_fmt(ai['kappa'])} [{_fmt(ai['kappa_boot_low'])}, "
                        f"{_fmt(ai['kappa_boot_high'])}] vs real {_fmt(rl['kappa'])} "
                        f"[{_fmt(rl['kappa_boot_low'])}, {_fmt(rl['kappa_boot_high'])}]{note} -> "
                        f"{o.replace('_', ' ')}")
    return AblationResult(
        "A7", "A7 (rule: metrics differ between AI and real faces => OOD effect): "
        + "; ".join(verdicts), outcomes[0] if len(set(outcomes)) == 1 else "cannot_tell",
        tables={"main": table}, plots={"ai_vs_real": table.select(
            "model_id", "faces", "accuracy", "kappa", "kappa_boot_low", "kappa_boot_high")},
        metrics={"rows": table.to_dicts()},
        simulated=any(bool(f["simulated"].any()) for f in frames), provenance=_provenance(frames))


# --- A8 -------------------------------------------------------------------------------------

def _mixed_model(df: pl.DataFrame, field: str) -> dict:
    d = df.select("identity", "race", "intended", pl.col(field).alias("rating")).drop_nulls()
    pdf = d.to_pandas()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = smf.mixedlm("rating ~ C(race) * C(intended)", pdf, groups="identity").fit(reml=True)
    notes = sorted({type(w.message).__name__ for w in caught})
    names = [n for n in fit.fe_params.index if n.startswith("C(race)") and ":" not in n]
    inter = [n for n in fit.fe_params.index if n.startswith("C(race)") and ":" in n]

    def wald(terms):
        if not terms:
            return np.nan, np.nan
        r = np.zeros((len(terms), len(fit.params)))
        for i, t in enumerate(terms):
            r[i, list(fit.params.index).index(t)] = 1
        w = fit.wald_test(r, scalar=True)
        return float(w.statistic), float(w.pvalue)

    race_chi2, race_p = wald(names)
    int_chi2, int_p = wald(inter)
    return {"field": field, "converged": bool(fit.converged), "llf": float(fit.llf),
            "race_effect": float(fit.fe_params[names[0]]) if names else np.nan,
            "race_term": names[0] if names else "", "race_wald_chi2": race_chi2,
            "race_p": race_p, "race_x_emotion_wald_chi2": int_chi2, "race_x_emotion_p": int_p,
            "identity_variance": float(fit.cov_re.iloc[0, 0]),
            # statsmodels may warn (e.g. identity variance on the boundary) and still converge:
            # convergence is read from the result, the warnings are kept as data
            "fit_warnings": ", ".join(notes)}


def _reference_race(races: list[str]) -> str:
    """The odds ratio compares each race with Korean faces when present (the plan's contrast)."""
    return "korean" if "korean" in races else races[-1]


def a8_fpr_by_race(ctx: AnalysisContext) -> AblationResult:
    fpr_rows, tests, lmm, conf, frames = [], [], [], [], []
    for m in ctx.models:
        df = ctx.predictions(m)
        frames.append(df)
        non = df.filter(pl.col("intended") != "angry").with_columns(
            (pl.col("emotion") == "angry").fill_null(False).alias("said_angry"))
        for race, g in non.group_by("race", maintain_order=True):
            k, n = int(g["said_angry"].sum()), g.height
            lo, hi = proportion_confint(k, n, alpha=ctx.a.alpha, method="wilson")
            angry = df.filter((pl.col("intended") == "angry") & (pl.col("race") == race[0]))
            fpr_rows.append({"model_id": m, "race": race[0], "false_angry": k, "n_not_angry": n,
                             "fpr": k / n, "fpr_low": lo, "fpr_high": hi,
                             "tpr_angry": float((angry["emotion"] == "angry").mean())})
        counts = non.group_by("race", maintain_order=True).agg(pl.col("said_angry").sum().alias("yes"),
                                          (~pl.col("said_angry")).sum().alias("no")).sort("race")
        chi2, p_chi, _, _ = stats.chi2_contingency(counts.select("yes", "no").to_numpy()) \
            if counts["yes"].sum() > 0 else (np.nan, np.nan, None, None)
        pdf = non.select("said_angry", "race", "identity").to_pandas()
        pdf["said_angry"] = pdf["said_angry"].astype(float)
        groups = pdf["identity"].astype("category").cat.codes
        reference = _reference_race(sorted(set(pdf["race"])))
        try:
            import statsmodels.api as sm

            fit = smf.glm(f"said_angry ~ C(race, Treatment(reference='{reference}'))", pdf,
                          family=sm.families.Binomial()).fit(
                cov_type="cluster", cov_kwds={"groups": groups})
            term = [t for t in fit.params.index if t.startswith("C(race")][0]
            lo_or, hi_or = np.exp(fit.conf_int(ctx.a.alpha).loc[term])
            logit = {"term": term, "odds_ratio": float(np.exp(fit.params[term])),
                     "or_low": float(lo_or), "or_high": float(hi_or), "p": float(fit.pvalues[term])}
        except (ValueError, np.linalg.LinAlgError, IndexError) as err:
            logit = {"term": "", "odds_ratio": np.nan, "or_low": np.nan, "or_high": np.nan,
                     "p": np.nan, "error": str(err)}
        tests.append({"model_id": m, "chi2": chi2, "chi2_p": p_chi, **logit})
        for f in M.FIELDS:
            lmm.append({"model_id": m, **_mixed_model(df, f)})
        for race, g in df.group_by("race", maintain_order=True):
            conf.append(M.confusion(g, ctx.emotions).with_columns(
                pl.lit(m).alias("model_id"), pl.lit(race[0]).alias("race")))
    fpr = pl.DataFrame(fpr_rows).sort("model_id", "race")
    test_df = pl.DataFrame(tests)
    verdicts, outcomes = [], []
    races = set(fpr["race"])
    for t in test_df.iter_rows(named=True):
        f = {r["race"]: r for r in fpr.filter(pl.col("model_id") == t["model_id"]).iter_rows(
            named=True)}
        if {"black", "korean"} <= races:
            hi_r, lo_r = f["black"], f["korean"]
        else:
            ordered = sorted(f.values(), key=lambda r: -r["fpr"])
            hi_r, lo_r = ordered[0], ordered[-1]
        sig = np.isfinite(t["p"]) and t["p"] < ctx.a.alpha
        o = ("supports" if sig and hi_r["fpr"] > lo_r["fpr"] else
             "does_not_support" if sig else "cannot_tell")
        outcomes.append(o)
        verdicts.append(f"{t['model_id']}: FPR({hi_r['race']}) {_fmt(hi_r['fpr'], 3)} "
                        f"[{_fmt(hi_r['fpr_low'], 3)}, {_fmt(hi_r['fpr_high'], 3)}] vs "
                        f"FPR({lo_r['race']}) {_fmt(lo_r['fpr'], 3)} [{_fmt(lo_r['fpr_low'], 3)}, "
                        f"{_fmt(lo_r['fpr_high'], 3)}]; odds ratio {_fmt(t['odds_ratio'])} "
                        f"[{_fmt(t['or_low'])}, {_fmt(t['or_high'])}], identity-clustered p = "
                        f"{_fmt(t['p'], 4)}; TPR on angry faces {_fmt(hi_r['tpr_angry'])} vs "
                        f"{_fmt(lo_r['tpr_angry'])} -> {o.replace('_', ' ')}")
    lmm_df = pl.DataFrame(lmm)
    return AblationResult(
        "A8", "A8 (rule: FPR(Black) > FPR(Korean) => over-attribution): " + "; ".join(verdicts),
        outcomes[0] if len(set(outcomes)) == 1 else "cannot_tell",
        tables={"main": fpr, "tests": test_df, "mixed_models": lmm_df,
                "confusion_by_race": pl.concat(conf)},
        plots={"fpr_by_race": fpr.select("model_id", "race", "fpr", "fpr_low", "fpr_high")},
        metrics={"fpr": fpr.to_dicts(), "tests": test_df.to_dicts(),
                 "mixed_models": lmm_df.to_dicts(),
                 "all_mixed_models_converged": bool(lmm_df["converged"].all())},
        simulated=any(bool(f["simulated"].any()) for f in frames), provenance=_provenance(frames))


# --- A9 -------------------------------------------------------------------------------------

@dataclass
class _RatingRDM:
    """The rating RDM (Euclidean), condensed and ranked once."""

    ranks: np.ndarray
    square_ranks: np.ndarray
    iu: tuple

    @classmethod
    def of(cls, y: np.ndarray) -> _RatingRDM:
        from scipy.spatial.distance import pdist, squareform

        iu = np.triu_indices(y.shape[0], k=1)
        ranks = stats.rankdata(pdist(y, "euclidean"))
        sq = squareform(ranks)
        return cls(ranks, sq, iu)


def _rsa(h: np.ndarray, rdm: _RatingRDM, n_perm: int, rng) -> dict:
    """Spearman and rho-a between the RDMs of h (correlation distance) and the ratings, with a
    label-permutation null for Spearman when ``n_perm`` > 0 (rows and columns permuted together)."""
    from scipy.spatial.distance import pdist

    dh = stats.rankdata(pdist(h, "correlation"))
    n = dh.size
    out = {"rsa_spearman": float(np.corrcoef(dh, rdm.ranks)[0, 1]),
           # rho-a (Nili et al. 2014) on the same tie-averaged ranks, without tie correction
           "rsa_rho_a": float(1 - 6 * np.sum((dh - rdm.ranks) ** 2) / (n**3 - n)),
           "rsa_p": np.nan, "rsa_null95": np.nan}
    if n_perm > 0:
        null = np.empty(n_perm)
        for i in range(n_perm):
            p = rng.permutation(h.shape[0])
            null[i] = np.corrcoef(dh, rdm.square_ranks[np.ix_(p, p)][rdm.iu])[0, 1]
        out.update(rsa_p=permutation_p(out["rsa_spearman"], null),
                   rsa_null95=float(np.quantile(null, 0.95)))
    return out


def a9_hidden_states(ctx: AnalysisContext) -> AblationResult:
    model = ctx.params.ablations.A9.model
    layers = ctx.hidden_layers(model)
    design = ctx.design()
    order = {s: i for i, s in enumerate(design["stimulus_id"])}
    idx = np.array([order[s] for s in layers[0]["stimulus_id"]])
    d = design[idx]
    y = d.select("valence_mean", "arousal_mean").to_numpy().astype(float)
    y = (y - y.mean(0)) / y.std(0)
    cats = d["intended"].to_numpy()
    rng = np.random.default_rng(ctx.a.seed)
    n_perm = ctx.a.permutations
    perms = np.stack([rng.permutation(len(y)) for _ in range(n_perm)])
    # within-category null: permute labels inside each emotion category only
    within_perms = np.tile(np.arange(len(y)), (n_perm, 1))
    for c in np.unique(cats):
        where = np.where(cats == c)[0]
        within_perms[:, where] = where[np.argsort(rng.random((n_perm, where.size)), axis=1)]
    rdm = _RatingRDM.of(y)
    no_rsa = {"rsa_spearman": np.nan, "rsa_rho_a": np.nan, "rsa_p": np.nan, "rsa_null95": np.nan}
    rows = []
    for li, layer in enumerate(layers):
        for pool in ("image_pool", "last_token"):
            h = layer[pool].astype(np.float64)
            h = h - h.mean(0)
            dcka = debiased_cka(h, y)
            null = debiased_cka_permutations(h, y, perms)
            within, wnull = 0.0, np.zeros(n_perm)
            for c in np.unique(cats):
                m = cats == c
                local = np.argsort(np.argsort(within_perms[:, m], axis=1), axis=1)
                within += debiased_cka(h[m], y[m]) / len(np.unique(cats))
                wnull += debiased_cka_permutations(h[m], y[m], local) / len(np.unique(cats))
            rows.append({"layer": li, "pooling": pool, "linear_cka": linear_cka(h, y),
                         "debiased_cka": dcka, "debiased_cka_p": permutation_p(dcka, null),
                         "debiased_cka_null95": float(np.quantile(null, 0.95)),
                         "within_category_debiased_cka": float(within),
                         "within_category_p": permutation_p(within, wnull),
                         **(_rsa(h, rdm, 0, rng) if pool == "image_pool" else no_rsa)})
    table = pl.DataFrame(rows)
    pooled = table.filter(pl.col("pooling") == "image_pool")
    best = pooled.sort("debiased_cka", descending=True).row(0, named=True)
    # the RSA permutation null (O(n^2) per permutation) at the best layer only
    h_best = layers[best["layer"]]["image_pool"].astype(np.float64)
    rsa_best = _rsa(h_best - h_best.mean(0), rdm, max(99, n_perm // 5), rng)
    best = {**best, **rsa_best}
    table = table.with_columns(
        pl.when((pl.col("layer") == best["layer"]) & (pl.col("pooling") == "image_pool"))
        .then(pl.lit(rsa_best["rsa_p"])).otherwise(pl.col("rsa_p")).alias("rsa_p"),
        pl.when((pl.col("layer") == best["layer"]) & (pl.col("pooling") == "image_pool"))
        .then(pl.lit(rsa_best["rsa_null95"])).otherwise(pl.col("rsa_null95")).alias("rsa_null95"))
    base = ctx.predictions(model)
    out_within = np.nanmean([pearson_with_ci(g["arousal"].drop_nulls().to_numpy(),
                                             g.drop_nulls("arousal")["arousal_mean"].to_numpy())[0]
                             for _, g in base.group_by("intended", maintain_order=True)])
    sig = best["within_category_p"] < ctx.a.alpha and best["debiased_cka_p"] < ctx.a.alpha
    o = "supports" if sig else "cannot_tell"
    verdict = (f"A9 (rule: within-category representational information above the permutation null"
               f" => information in the representation, not the output): {model}, best layer "
               f"{best['layer']} (image tokens): debiased CKA {_fmt(best['debiased_cka'], 3)} "
               f"(null 95 % {_fmt(best['debiased_cka_null95'], 3)}, p = "
               f"{_fmt(best['debiased_cka_p'], 4)}), within-category "
               f"{_fmt(best['within_category_debiased_cka'], 3)} "
               f"(p = {_fmt(best['within_category_p'], 4)}); the output's mean within-category "
               f"r with human arousal {_fmt(out_within)} -> {o.replace('_', ' ')}")
    return AblationResult(
        "A9", verdict, o, tables={"main": table},
        plots={"cka_rsa_by_layer": table.select("layer", "pooling", "linear_cka", "debiased_cka",
                                                "within_category_debiased_cka", "rsa_spearman")},
        metrics={"model": model, "best_layer": best, "output_within_category_r": out_within,
                 "rows": table.to_dicts()},
        simulated=bool(base["simulated"].any()), provenance=_provenance([base]))


ANALYSES = {a.analysis: globals()[a.analysis] for a in REGISTRY.values()}


def run_analysis(ablation_id: str, ctx: AnalysisContext) -> AblationResult:
    if ablation_id == "baseline":
        return baseline(ctx)
    return ANALYSES[REGISTRY[ablation_id].analysis](ctx)
