"""A5: dark knowledge. The digit distributions saved with the baseline run (no new calls).

The question: does the 9-digit rating distribution carry within-category information
that the argmax (the answer) hides?

Estimands (docs/analysis-plan.md, A5), per model, arousal, category = intended emotion (primary;
the correctly labelled images and the model's own label are sensitivity groupings):

(a) within (category, argmax) cells: the SD of the expected rating E = sum k p_k (descriptive),
    and the pooled within-cell correlation of E with the human mean rating: inside a cell the
    argmax is constant, so any correlation there is information the answer hides;
(b) r_w(E, human) - r_w(argmax, human), r_w the pooled within-category correlation, with an
    identity-cluster bootstrap CI.

Which steps enter: rating steps whose parsed rating is usable (``ok``/``normalised``) and whose
digits hold at least ``analysis.digit_mass_threshold`` of the probability; the others are counted
(``n_unusable_rating``, ``n_flagged``) and excluded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emoface.ablations.base import Ablation, Headline, baseline_only
from emoface.ablations.report_spec import (
    FIELD,
    GROUPING,
    MODEL,
    OUTCOME,
    Col,
    Decision,
    Estimate,
    ReportSpec,
    View,
    ci,
    num,
    rows,
)

if TYPE_CHECKING:
    import polars as pl

    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext


def digit_distribution(lp: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of 9 digit log-probabilities (NaN = not reported): the probability mass the digits
    held, the renormalised distribution (log-sum-exp, float64), entropy (nats), E and argmax."""
    from scipy.special import logsumexp

    lp = np.asarray(lp, np.float64)
    known = np.isfinite(lp)
    filled = np.where(known, lp, -np.inf)
    any_known = known.any(axis=1)
    log_mass = np.where(any_known, logsumexp(np.where(any_known[:, None], filled, 0.0), axis=1),
                        -np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        logp = filled - np.where(any_known, log_mass, 0.0)[:, None]
        p = np.where(known, np.exp(logp), 0.0)
        ent = -np.where(p > 0, p * np.where(p > 0, logp, 0.0), 0.0).sum(axis=1)
    digits = np.arange(1, 10)
    nan = np.full(lp.shape[0], np.nan)
    return {"digit_mass": np.exp(log_mass), "p": p,
            "entropy": np.where(any_known, ent, nan),
            "expected": np.where(any_known, p @ digits, nan),
            "argmax": np.where(any_known, np.argmax(filled, axis=1) + 1.0, nan),
            "n_missing": (~known).sum(axis=1)}


def digit_table(ctx, model: str) -> pl.DataFrame:
    """Per (stimulus, field): the 9-digit distribution summary at the rating step."""
    import polars as pl

    lg = ctx.logits(model)
    rating = np.isin(lg["field"], ("valence", "arousal"))
    lg = {k: v[rating] for k, v in lg.items()}
    d = digit_distribution(lg["digit_logprobs"])
    return pl.DataFrame({
        "stimulus_id": lg["stimulus_id"], "field": lg["field"], "entropy": d["entropy"],
        "expected": d["expected"], "argmax": d["argmax"], "digit_mass": d["digit_mass"],
        "n_missing": d["n_missing"],
        "flagged": d["digit_mass"] < ctx.a.digit_mass_threshold,
    }).with_columns(pl.col("argmax").fill_nan(None), pl.lit(model).alias("model_id"))


def _steps(ctx, m: str, preds: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Digit rows joined with the design and the parsed rating's status; which rows enter."""
    import polars as pl

    from emoface.analysis import metrics as M

    status = pl.concat([preds.select("stimulus_id", pl.lit(f).alias("field"),
                                     pl.col(f"{f}_status").alias("rating_status"))
                        for f in M.FIELDS])
    d = digit_table(ctx, m).join(status, on=["stimulus_id", "field"], how="left").join(
        preds.select("stimulus_id", "identity", "intended", "emotion", "emotion_status",
                     "valence_mean", "arousal_mean"), on="stimulus_id")
    usable = pl.col("rating_status").is_in(M.USABLE)
    counts = {f: {"n_steps": int(d.filter(pl.col("field") == f).height),
                  "n_unusable_rating": int(d.filter((pl.col("field") == f) & ~usable).height),
                  "n_flagged": int(d.filter((pl.col("field") == f) & pl.col("flagged")).height)}
              for f in M.FIELDS}
    return d.with_columns((usable & ~pl.col("flagged") & pl.col("argmax").is_not_null())
                          .alias("enters")), counts


def _a5_tests(ctx, sub: pl.DataFrame, g: str, field: str, w_all: np.ndarray) -> dict:
    """(a) and (b) of the module docstring for one model, field and grouping."""
    from emoface.analysis import metrics as M
    from emoface.analysis.stats import bc_pvalue

    keep, cats = M.grouping(sub, g)
    e = sub["expected"].to_numpy()[keep]
    a = sub["argmax"].to_numpy().astype(float)[keep]
    h = sub[f"{field}_mean"].to_numpy().astype(float)[keep]
    w = w_all[:, keep]
    one = np.ones((1, e.size))
    cells = np.char.add(np.char.add(cats.astype(str), "|"), a.astype(int).astype(str))
    # (a) inside (category, argmax) cells
    spread = float(M.w_within_category_sd(e, cells, one)[0])
    spread_b = M.w_within_category_sd(e, cells, w)
    r_cell = float(M.w_within_pearson(e, h, cells, one)[0])
    r_cell_b = M.w_within_pearson(e, h, cells, w)
    # (b) within categories: E vs argmax as trackers of the human ratings
    r_e = float(M.w_within_pearson(e, h, cats, one)[0])
    r_a = float(M.w_within_pearson(a, h, cats, one)[0])
    diff_b = M.w_within_pearson(e, h, cats, w) - M.w_within_pearson(a, h, cats, w)
    return {"grouping": g, "n": int(e.size),
            "within_cell_sd_expected": spread,
            "within_cell_sd_low": M.percentile_ci(spread_b, ctx.a.alpha, spread)[0],
            "within_cell_sd_high": M.percentile_ci(spread_b, ctx.a.alpha, spread)[1],
            "r_within_cell": r_cell,
            "r_within_cell_low": M.percentile_ci(r_cell_b, ctx.a.alpha, r_cell)[0],
            "r_within_cell_high": M.percentile_ci(r_cell_b, ctx.a.alpha, r_cell)[1],
            "p_a": bc_pvalue(r_cell_b, r_cell),
            "r_within_expected": r_e, "r_within_argmax": r_a, "diff_r": r_e - r_a,
            "diff_low": M.percentile_ci(diff_b, ctx.a.alpha, r_e - r_a)[0],
            "diff_high": M.percentile_ci(diff_b, ctx.a.alpha, r_e - r_a)[1],
            "p_b": bc_pvalue(diff_b, r_e - r_a),
            "mean_entropy_nats": float(sub["entropy"].mean())}


def _a5_outcome(r: dict, alpha: float, floor: float) -> str:
    from emoface.analysis import common as C

    if not r["mean_entropy_nats"] > floor:
        return C.NOT_SUPPORTED  # a point mass: nothing below the answer
    a_ok = r["p_a_holm"] < alpha and r["r_within_cell"] > 0
    b_ok = r["p_b_holm"] < alpha and r["diff_r"] > 0
    return C.SUPPORTS if a_ok and b_ok else C.CANNOT_TELL


def analysis(ctx: AnalysisContext) -> AblationResult:
    """A5 per model (arousal enters the verdict; valence is reported)."""
    import polars as pl

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, word

    per_image, summary, rows, frames, counts = [], [], [], [], {}
    for m in ctx.models:
        preds = ctx.predictions(m)
        frames.append(preds)
        d, counts[m] = _steps(ctx, m, preds)
        per_image.append(d)
        ok = d.filter(pl.col("enters"))
        summary.append(ok.group_by("model_id", "field", "intended", maintain_order=True).agg(
            pl.col("entropy").mean().alias("mean_entropy_nats"),
            pl.col("expected").std().alias("sd_expected"),
            pl.col("argmax").std().alias("sd_argmax"),
            pl.col("digit_mass").mean().alias("mean_digit_mass"), pl.len().alias("n"))
            .rename({"intended": "category"}))
        for f in M.FIELDS:
            sub = ok.filter(pl.col("field") == f)
            w = C.boot_weights(ctx, sub["identity"].to_list())
            for g in M.GROUPINGS:
                rows.append({"model_id": m, "field": f, **counts[m][f],
                             **_a5_tests(ctx, sub, g, f, w)})
    overall = {}
    for g in M.GROUPINGS:
        fam = [r for r in rows if r["field"] == "arousal" and r["grouping"] == g]
        C.add_holm(fam, "p_a", "p_a_holm")
        C.add_holm(fam, "p_b", "p_b_holm")
        for r in fam:
            r["outcome"] = _a5_outcome(r, ctx.a.alpha, ctx.a.entropy_floor)
        overall[g] = C.combine([r["outcome"] for r in fam])
    for r in rows:
        for k in ("p_a_holm", "p_b_holm"):
            r.setdefault(k, np.nan)
        r.setdefault("outcome", "")
    table = pl.DataFrame(rows)
    summ = pl.concat(summary).sort("model_id", "field", "category")
    verdicts = []
    for r in table.filter((pl.col("field") == "arousal") & (pl.col("grouping") == "intended")
                          ).iter_rows(named=True):
        verdicts.append(
            f"{r['model_id']}: mean entropy {fmt(r['mean_entropy_nats'])} nats (max 2.20, floor "
            f"{ctx.a.entropy_floor:g}); (a) inside (category, argmax) cells SD of E "
            f"{fmt(r['within_cell_sd_expected'])}, r(E, human) {fmt(r['r_within_cell'])} "
            f"[{fmt(r['r_within_cell_low'])}, {fmt(r['r_within_cell_high'])}] (Holm p "
            f"{fmt(r['p_a_holm'], 4)}); (b) within-category r(E, human) "
            f"{fmt(r['r_within_expected'])} vs r(argmax, human) {fmt(r['r_within_argmax'])}, "
            f"difference {fmt(r['diff_r'])} [{fmt(r['diff_low'])}, {fmt(r['diff_high'])}] (Holm "
            f"p {fmt(r['p_b_holm'], 4)}); steps excluded: {r['n_unusable_rating']} unusable "
            f"rating(s), {r['n_flagged']} below the digit-mass threshold -> {word(r['outcome'])}")
    defs = ("; by grouping: " + ", ".join(f"{g} {word(o)}" for g, o in overall.items())
            + (" -> definition-sensitive" if len(set(overall.values())) > 1 else ""))
    return AblationResult(
        "A5", "A5 (rule: entropy above the floor, and (a) E tracks human arousal inside "
        "(category, argmax) cells and (b) better than the argmax within categories, both CIs "
        f"above 0 after Holm => output-level collapse; family: {len(ctx.models)} model(s) x 2 "
        "tests): " + "; ".join(verdicts) + defs, C.across_definitions(overall),
        tables={"main": table, "by_category": summ, "per_image": pl.concat(per_image)},
        plots={"entropy_by_category": summ.select("model_id", "field", "category",
                                                  "mean_entropy_nats", "sd_expected", "sd_argmax")},
        metrics={"rows": table.to_dicts(), "outcome_by_grouping": overall,
                 "steps": counts, "family": "arousal x models, each of tests (a) and (b)"},
        simulated=C.any_simulated(frames), provenance=C.provenance(frames))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import polars as pl
    from scipy import stats

    from emoface.analysis.figures import errorbars, new_figure, save

    tests = result.tables["main"].filter((pl.col("field") == "arousal")
                                         & (pl.col("grouping") == "intended"))
    fig, axes = new_figure("A5: arousal digit distributions, decision estimates and entropy "
                           "(95 % CIs)", result.simulated, 2, width=5.6)
    for i, (key, what) in enumerate((("r_within_cell", "(a) r(E, human) in (category, answer) "
                                      "cells"), ("diff_r", "(b) r(E, human) - r(answer, human)"))):
        lo, hi = ("r_within_cell_low", "r_within_cell_high") if key == "r_within_cell" \
            else ("diff_low", "diff_high")
        errorbars(axes[0], tests["model_id"], tests[key], tests[lo], tests[hi], color=f"C{i}",
                  offset=0.12 * (2 * i - 1), label=what, rotation=15)
    axes[0].set(ylabel="correlation (within category)", title="decision estimates (Holm in the "
                "table)")
    axes[0].legend(fontsize=6)
    # entropy per category: mean with the t interval over the images that entered
    steps = result.tables["per_image"].filter((pl.col("field") == "arousal") & pl.col("enters"))
    cats = sorted(steps["intended"].unique().to_list())
    models = steps["model_id"].unique(maintain_order=True).to_list()
    width = 0.8 / max(len(models), 1)
    alpha = 0.05
    for i, model in enumerate(models):
        v, lo, hi = [], [], []
        for c in cats:
            e = steps.filter((pl.col("model_id") == model) & (pl.col("intended") == c))[
                "entropy"].to_numpy().astype(float)
            mean = float(e.mean()) if e.size else np.nan
            half = (stats.t.ppf(1 - alpha / 2, e.size - 1) * e.std(ddof=1) / np.sqrt(e.size)
                    if e.size > 1 else np.nan)
            v.append(mean)
            lo.append(mean - half)
            hi.append(mean + half)
        x = np.arange(len(cats)) + i * width - 0.4 + width / 2
        axes[1].bar(x, v, width, label=model, color=f"C{i}", alpha=.8)
        v, lo, hi = (np.asarray(a, float) for a in (v, lo, hi))
        axes[1].errorbar(x, v, yerr=[np.nan_to_num(v - lo), np.nan_to_num(hi - v)], fmt="none",
                         color="black", capsize=2, lw=.8)
    axes[1].axhline(np.log(9), color="grey", ls="--", lw=.8, label="uniform (ln 9)")
    axes[1].set_xticks(np.arange(len(cats)), cats, fontsize=7)
    axes[1].set(ylabel="mean entropy (nats)", title="entropy by intended emotion (t CIs)")
    axes[1].legend(fontsize=6)
    for ax in axes:
        ax.title.set_fontsize(8)
    return [save(fig, folder / "entropy_by_category.png")]


def decisions(tables, metrics: dict, alpha: float) -> list[Decision]:
    """Per model (arousal, intended emotion): tests (a) and (b), both Holm-adjusted."""
    return [Decision(
        r["model_id"], "(a) r(E, human) inside (category, answer) cells; (b) within-category "
        "r(E, human) − r(answer, human); arousal",
        [Estimate("(a)", r["r_within_cell"], r["r_within_cell_low"], r["r_within_cell_high"]),
         Estimate("(b)", r["diff_r"], r["diff_low"], r["diff_high"])],
        [("(a)", num(r["p_a_holm"])), ("(b)", num(r["p_b_holm"]))], r["outcome"] or "cannot_tell")
        for r in rows(tables("main"), field="arousal", grouping="intended")]


REPORT = ReportSpec(
    "Does the digit distribution hold within-category information the answer hides?",
    decisions, "models", (View("main", (
        MODEL, FIELD, GROUPING, Col("n", "n"), Col("unusable ratings", "n_unusable_rating"),
        Col("below digit mass", "n_flagged"), Col("mean entropy (nats)", "mean_entropy_nats"),
        ci("(a) r in cells [CI]", "r_within_cell", "r_within_cell_low", "r_within_cell_high"),
        Col("(a) p (Holm)", "p_a_holm"),
        ci("(b) r(E) − r(answer) [CI]", "diff_r", "diff_low", "diff_high"),
        Col("(b) p (Holm)", "p_b_holm"), OUTCOME)),))


ABLATION = Ablation(
    id="A5", name="dark knowledge", priority=2, tiers=("minimal", "competitive", "complete",
                                                       "extended"),
    headline=Headline("main", "r_within_cell", "r_within_cell_low", "r_within_cell_high",
                      "p_a_holm"),  # its DVC metrics row
    paper_section="Section 5.1",
    hypothesis="The digit distribution still discriminates inside a category even when the "
               "argmax does not.",
    interpretation="Entropy > 0 and expected ratings varying within a category => collapse is an "
                   "output-level effect.",
    planned_hours=1.0, needs="analysis of the baseline logits",
    work=baseline_only, analysis=analysis, figures=figures, report=REPORT,
    analysis_seconds=5.0,  # CPU s on the embedded set (emoface/planning.py)
)
