"""A11: does the model's uncertainty mirror human disagreement? No new model calls: the digit
distributions stored with the baseline (A5's data) against the human norms.

Per image and rating field, from the 9-digit distribution ``p`` at the rating step (renormalised
over the digits the step returned, as in A5): the expected rating ``E = sum k p_k``, the model's
SD ``sqrt(sum p_k (k - E)^2)`` and entropy (nats); against the humans' mean and SD (norms).
Images whose digits held less probability mass than ``analysis.digit_mass_threshold`` are flagged
and left out, as in A5.

* Within each intended emotion category (the same images for model and humans), the correlation
  of the model's SD (and entropy) with the human SD; the pooled within-category r (both centred
  within category) carries an identity-cluster bootstrap CI (bias-corrected percentile).
* Mean adjustment: on a 1-9 scale both SDs shrink near 1 and 9, so they correlate through their
  means. The decision uses the partial r within category of the two SDs given both means and
  their squares; as a sensitivity analysis, each SD divided by the largest SD possible at its mean
  (Bhatia-Davis: variance <= (mu - 1)(9 - mu); a human sample SD over n raters sqrt(n / (n - 1))
  times that) and the pooled within-category r of those; and the unadjusted r. The human SD's
  sampling error over n raters (about s^2 / (2 (n - 1))) attenuates r: its reliability (after
  the partialling) and the disattenuated r are reported; the decision uses the attenuated r
  (attenuation shrinks r towards 0 but cannot move it across 0).
* Wasserstein-1 distance between the model's distribution and the humans' on the 1-9 scale,
  ``sum_k |F_model(k) - F_human(k)|``, the human distribution a normal with the image's mean and
  SD discretised to 1..9 (bins k +- 0.5, tails folded into 1 and 9): the norms hold means, SDs
  and rater counts, not the raters' histogram. Beside it, the distance of the model's single
  answer (all mass on its argmax digit), and the paired difference of the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emoface.ablations.base import Ablation, Headline, SimulatedDesign, WorkItem, baseline_items
from emoface.ablations.report_spec import (
    FIELD,
    MODEL,
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
    from emoface.config import Params

DIGITS = np.arange(1, 10, dtype=np.float64)


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models)


def digit_moments(p: np.ndarray) -> dict[str, np.ndarray]:
    """Expected rating, SD and entropy (nats) of rows of a (n, 9) distribution over 1..9."""
    expected = p @ DIGITS
    sd = np.sqrt(np.clip(p @ DIGITS**2 - expected**2, 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0).sum(axis=1)
    return {"expected": expected, "sd": sd, "entropy": entropy}


def discretised_normal(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """(n, 9) probabilities of N(mean, sd) on 1..9: bins k +- 0.5, the tails in 1 and 9. An SD of
    0 puts all mass on the digit nearest the mean."""
    from scipy.stats import norm

    mean, sd = np.asarray(mean, np.float64)[:, None], np.asarray(sd, np.float64)[:, None]
    edges = np.arange(1.5, 9.0)  # 1.5 .. 8.5
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (edges[None, :] - mean) / sd
        cdf = np.where(sd > 0, norm.cdf(z), (edges[None, :] >= mean).astype(float))
    cdf = np.concatenate([np.zeros((cdf.shape[0], 1)), cdf, np.ones((cdf.shape[0], 1))], axis=1)
    return np.diff(cdf, axis=1)


def wasserstein_1(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Wasserstein-1 distance between distributions on 1..9 (unit spacing)."""
    return np.abs(np.cumsum(p - q, axis=1)[:, :-1]).sum(axis=1)


def digit_distributions(ctx: AnalysisContext, model: str) -> pl.DataFrame:
    """Per (stimulus, rating field): the renormalised digit distribution, its mass and flag."""
    import polars as pl

    lg = ctx.logits(model)
    rating = np.isin(lg["field"], ("valence", "arousal"))
    lp = lg["digit_logprobs"][rating].astype(np.float64)
    known = np.isfinite(lp)
    raw = np.where(known, np.exp(np.where(known, lp, 0.0)), 0.0)
    mass = raw.sum(axis=1)
    ok = mass > 0
    p = np.where(ok[:, None], raw / np.where(ok, mass, 1.0)[:, None], np.nan)  # no digit: NaN
    return pl.DataFrame({
        "stimulus_id": lg["stimulus_id"][rating], "field": lg["field"][rating],
        **{f"p{k}": p[:, k - 1] for k in range(1, 10)}, "digit_mass": mass,
        "argmax": np.where(ok, np.argmax(np.where(known, lp, -np.inf), axis=1) + 1, 0),
        "flagged": (mass < ctx.a.digit_mass_threshold) | ~ok,
    })


def _within_centred(x: np.ndarray, cat: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x centred on its (weighted) category means, per bootstrap row of weights w."""
    out = np.empty_like(w)
    for c in np.unique(cat):
        m = cat == c
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (w[:, m] * x[m]).sum(1, keepdims=True) / w[:, m].sum(1, keepdims=True)
        out[:, m] = x[m] - mean
    return out


def pooled_within_r(x: np.ndarray, y: np.ndarray, cat: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pooled within-category Pearson r of x and y per bootstrap row (weights w, (B, n))."""
    xc, yc = _within_centred(x, cat, w), _within_centred(y, cat, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * xc * yc).sum(1) / np.sqrt((w * xc**2).sum(1) * (w * yc**2).sum(1))


def _per_image(ctx: AnalysisContext, model: str) -> pl.DataFrame:
    import polars as pl

    from emoface.analysis.metrics import relative_sd

    d = digit_distributions(ctx, model)
    design = ctx.predictions(model).select("stimulus_id", "identity", "intended", "simulated")
    norms = ctx.stimuli().norms
    d = d.join(design, on="stimulus_id").join(norms, on="stimulus_id")
    rows = []
    for f in ("valence", "arousal"):
        s = d.filter(pl.col("field") == f)
        p = s.select(f"p{k}" for k in range(1, 10)).to_numpy().astype(np.float64)
        mom = digit_moments(p)
        human = discretised_normal(s[f"{f}_mean"].to_numpy(), s[f"{f}_sd"].to_numpy())
        onehot = np.eye(9)[np.clip(s["argmax"].to_numpy() - 1, 0, 8)]
        rows.append(s.select("stimulus_id", "identity", "intended", "field", "digit_mass",
                             "flagged", "argmax", "n_raters").with_columns(
            pl.lit(model).alias("model_id"), pl.Series("model_expected", mom["expected"]),
            pl.Series("model_sd", mom["sd"]), pl.Series("model_entropy", mom["entropy"]),
            s[f"{f}_mean"].alias("human_mean"), s[f"{f}_sd"].alias("human_sd"),
            pl.Series("model_relative_sd", relative_sd(mom["sd"], mom["expected"])),
            pl.Series("human_relative_sd", relative_sd(s[f"{f}_sd"].to_numpy(),
                                                       s[f"{f}_mean"].to_numpy(),
                                                       n=s["n_raters"].to_numpy())),
            pl.Series("w1_distribution", wasserstein_1(p, human)),
            pl.Series("w1_answer", wasserstein_1(onehot, human))))
    return pl.concat(rows)


def human_sd_reliability(resid: np.ndarray, sd: np.ndarray, n: np.ndarray, dof: int) -> float:
    """Reliability of the human SD as it enters A11's correlation: 1 - (mean sampling variance
    of the SD) / (variance of ``resid``, the human SD's residuals after what the correlation
    partials out, over ``dof`` degrees of freedom).

    The sampling variance of a sample SD over n raters is about s^2 / (2 (n - 1)) (normal
    theory; on a bounded 1-9 scale only approximate), and it does not depend on the image's mean
    or category, so it is the same in the residuals. NaN when any image has fewer than 2 raters
    (its SD is not measured) or no degrees of freedom are left."""
    sd, n, resid = (np.asarray(a, float) for a in (sd, n, resid))
    if dof < 1 or (n < 2).any():
        return float("nan")
    err = sd**2 / (2 * (n - 1))
    var = (resid**2).sum() / dof
    return float(1 - err.mean() / var) if var > 0 else float("nan")


def _adjusted(ctx: AnalysisContext, ok: pl.DataFrame, w: np.ndarray) -> dict[str, float]:
    """The mean-adjusted correlations of the model's SD with the human SD (docs/analysis-plan.md,
    A11): (primary) the partial r within category given both means and their squares;
    (sensitivity) the pooled within-category r of the SDs relative to the largest SD possible at
    their means; the human SD's reliability and the disattenuated primary r."""
    from emoface.analysis import metrics as M

    cat = ok["intended"].to_numpy().astype(str)
    # primary: partial r within category (residuals on category dummies, both means, squares)
    e, m = (ok[c].to_numpy().astype(float) for c in ("model_expected", "human_mean"))
    x, y = (ok[c].to_numpy().astype(float) for c in ("model_sd", "human_sd"))
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(e) & np.isfinite(m)
    cats = np.unique(cat[good])
    z = np.column_stack([*(cat[good] == c for c in cats), e[good], e[good] ** 2, m[good],
                         m[good] ** 2]).astype(float)
    z[:, len(cats):] -= z[:, len(cats):].mean(0)  # centred columns: a better-conditioned solve
    ones = np.ones((1, int(good.sum())))
    point = float(M.w_partial_r(x[good], y[good], z, ones)[0])
    lo, hi = M.percentile_ci(M.w_partial_r(x[good], y[good], z, w[:, good]), ctx.a.alpha,
                             point)
    out: dict[str, float] = {"n_adjusted": int(good.sum()), "r_partial_means": point,
                             "r_partial_low": lo, "r_partial_high": hi}
    coef = np.linalg.lstsq(z, y[good], rcond=None)[0]
    rho = human_sd_reliability(y[good] - z @ coef, y[good],
                               ok["n_raters"].to_numpy().astype(float)[good],
                               int(good.sum()) - z.shape[1])
    k = 1 / np.sqrt(rho) if np.isfinite(rho) and rho > 0 else np.nan
    out.update(human_sd_reliability=rho, r_partial_disattenuated=point * k,
               r_partial_disattenuated_low=lo * k, r_partial_disattenuated_high=hi * k)
    # sensitivity: the SDs relative to the largest SD possible at their means
    rm, rh = (ok[c].to_numpy().astype(float) for c in ("model_relative_sd", "human_relative_sd"))
    fin = np.isfinite(rm) & np.isfinite(rh)
    point = float(pooled_within_r(rm[fin], rh[fin], cat[fin], np.ones((1, int(fin.sum()))))[0])
    lo, hi = M.percentile_ci(pooled_within_r(rm[fin], rh[fin], cat[fin], w[:, fin]),
                             ctx.a.alpha, point)
    out.update(n_relative=int(fin.sum()), r_relative_sd=point, r_relative_low=lo,
               r_relative_high=hi)
    return out


def _disattenuation_text(r: dict) -> str:
    from emoface.analysis.common import fmt

    rho = r["human_sd_reliability"]
    if not np.isfinite(rho):
        return "human-SD reliability unknown (images with < 2 raters): not disattenuated"
    if rho <= 0:
        return (f"human-SD reliability {fmt(rho)}: the human SDs vary no more than their "
                "normal-theory sampling error, not disattenuated")
    return f"human-SD reliability {fmt(rho)}, disattenuated {fmt(r['r_partial_disattenuated'])}"


def _summaries(ctx: AnalysisContext, per_image: pl.DataFrame) -> tuple[list[dict], list[dict]]:
    """(rows of the main table per model x field, rows per model x field x category)."""
    import polars as pl

    from emoface.analysis import metrics as M
    from emoface.analysis.stats import pearson_with_ci

    main, by_cat = [], []
    for (m, f), g in per_image.group_by("model_id", "field", maintain_order=True):
        ok = g.filter(~pl.col("flagged"))
        cat = ok["intended"].to_numpy()
        x_sd, x_h, hsd = (ok[c].to_numpy().astype(float) for c in
                          ("model_sd", "model_entropy", "human_sd"))
        w = M.cluster_weights(ok["identity"].to_list(), ctx.a.bootstrap, ctx.a.seed)
        ones = np.ones((1, ok.height))
        row = {"model_id": m, "field": f, "n": ok.height,
               "n_flagged": int(g["flagged"].sum()),
               "mean_model_sd": float(x_sd.mean()), "mean_human_sd": float(hsd.mean())}
        for name, x in (("sd", x_sd), ("entropy", x_h)):
            point = float(pooled_within_r(x, hsd, cat, ones)[0])
            lo, hi = M.percentile_ci(pooled_within_r(x, hsd, cat, w), ctx.a.alpha, point)
            row.update({f"r_{name}_human_sd": point, f"r_{name}_low": lo, f"r_{name}_high": hi})
        row.update(_adjusted(ctx, ok, w))
        w1d, w1a = (ok[c].to_numpy().astype(float) for c in ("w1_distribution", "w1_answer"))
        diff = float((w1a - w1d).mean())
        lo, hi = M.percentile_ci((w * (w1a - w1d)).sum(1) / w.sum(1), ctx.a.alpha, diff)
        row.update({"mean_w1_distribution": float(w1d.mean()), "mean_w1_answer": float(w1a.mean()),
                    "w1_answer_minus_distribution": diff, "w1_diff_low": lo, "w1_diff_high": hi})
        main.append(row)
        for c in sorted(set(cat)):
            sub = ok.filter(pl.col("intended") == c)
            r, rlo, rhi = pearson_with_ci(sub["model_sd"].to_numpy().astype(float),
                                          sub["human_sd"].to_numpy().astype(float), ctx.a.alpha)
            by_cat.append({"model_id": m, "field": f, "category": c, "n": sub.height,
                           "mean_model_sd": float(sub["model_sd"].mean()),
                           "mean_human_sd": float(sub["human_sd"].mean()),
                           "r_sd_human_sd": r, "r_low": rlo, "r_high": rhi,
                           "mean_w1_distribution": float(sub["w1_distribution"].mean())})
    return main, by_cat


def analysis(ctx: AnalysisContext) -> AblationResult:
    import polars as pl

    from emoface.analysis.common import AblationResult
    from emoface.analysis.common import fmt as _fmt
    from emoface.analysis.common import interval_outcome as _outcome
    from emoface.analysis.common import provenance as _provenance

    if ctx.stimuli().norms is None:
        raise ValueError(f"A11 needs human norms: stimulus set '{ctx.params.stimuli.set_name}' "
                         "has no norms.csv")
    per_image = pl.concat([_per_image(ctx, m) for m in ctx.models])
    main, by_cat = _summaries(ctx, per_image)
    table = pl.DataFrame(main)
    verdicts, outcomes, sens = [], [], []
    for r in table.filter(pl.col("field") == "arousal").iter_rows(named=True):
        o = _outcome(r["r_partial_low"], r["r_partial_high"])
        o_relative = _outcome(r["r_relative_low"], r["r_relative_high"])
        o_raw = _outcome(r["r_sd_low"], r["r_sd_high"])
        outcomes.append(o)
        sens.append({"model_id": r["model_id"], "partial_on_means": o, "relative_sd": o_relative,
                     "unadjusted": o_raw})
        verdicts.append(f"{r['model_id']}: partial r of the model's and the humans' arousal SD "
                        f"within category, given both means (and their squares) "
                        f"{_fmt(r['r_partial_means'])} [{_fmt(r['r_partial_low'])}, "
                        f"{_fmt(r['r_partial_high'])}] (identity bootstrap; "
                        f"{_disattenuation_text(r)}) -> {o.replace('_', ' ')}; SDs relative to "
                        f"the largest SD possible at their means {_fmt(r['r_relative_sd'])} "
                        f"[{_fmt(r['r_relative_low'])}, {_fmt(r['r_relative_high'])}] -> "
                        f"{o_relative.replace('_', ' ')}; unadjusted r(model SD, human SD) "
                        f"{_fmt(r['r_sd_human_sd'])} [{_fmt(r['r_sd_low'])}, "
                        f"{_fmt(r['r_sd_high'])}] -> {o_raw.replace('_', ' ')} (entropy "
                        f"{_fmt(r['r_entropy_human_sd'])}); mean SD model "
                        f"{_fmt(r['mean_model_sd'])} vs humans {_fmt(r['mean_human_sd'])}; W1 to "
                        f"the humans: distribution {_fmt(r['mean_w1_distribution'])}, single "
                        f"answer {_fmt(r['mean_w1_answer'])}; {r['n_flagged']} images flagged "
                        f"(digit mass < {ctx.a.digit_mass_threshold:g})"
                        + ("" if o == o_relative else " (the two mean adjustments disagree)"))
    frames = [ctx.predictions(m) for m in ctx.models]
    cat_df = pl.DataFrame(by_cat)
    return AblationResult(
        "A11", "A11 (rule: the model's SD rising with the human SD within categories once both "
        "means are partialled out (the 1-9 scale's bounds shrink both SDs near 1 and 9), CI "
        "above 0 => the model's uncertainty mirrors human disagreement; every model must "
        "support): " + "; ".join(verdicts),
        outcomes[0] if len(set(outcomes)) == 1 else "cannot_tell",
        tables={"main": table, "by_category": cat_df,
                "per_image": per_image},
        plots={"sd_model_vs_human": per_image.filter(~pl.col("flagged")).select(
            "model_id", "field", "intended", "human_sd", "model_sd")},
        metrics={"digit_mass_threshold": ctx.a.digit_mass_threshold,
                 "human_distribution": "discretised normal (norms: mean, SD)",
                 "category": "intended emotion", "rows": table.to_dicts(),
                 "decided_on": "r_partial_means", "outcome_by_adjustment": sens,
                 "by_category": cat_df.to_dicts()},
        simulated=any(bool(f["simulated"].any()) for f in frames), provenance=_provenance(frames))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import polars as pl

    from emoface.analysis.figures import new_figure, save

    d = result.plots["sd_model_vs_human"].filter(pl.col("field") == "arousal")
    models = d["model_id"].unique(maintain_order=True).to_list()
    fig, axes = new_figure("A11: model SD (digit distribution) vs human SD, arousal",
                           result.simulated, max(len(models), 1))
    cats = sorted(d["intended"].unique().to_list())
    main = {r["model_id"]: r for r in result.tables["main"].filter(
        pl.col("field") == "arousal").iter_rows(named=True)}
    for ax, model in zip(axes, models, strict=False):
        sub = d.filter(pl.col("model_id") == model)
        for i, c in enumerate(cats):
            s = sub.filter(pl.col("intended") == c)
            ax.scatter(s["human_sd"], s["model_sd"], s=4, alpha=.5, color=f"C{i}", label=c)
        r = main.get(model)
        est = (f"\nwithin-category r {r['r_sd_human_sd']:.2f} [{r['r_sd_low']:.2f}, "
               f"{r['r_sd_high']:.2f}]" if r else "")
        ax.set(xlabel="human SD (norms)", ylabel="model SD over 1-9", title=model + est)
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6, markerscale=3)
    return [save(fig, folder / "sd_model_vs_human.png")]


def decisions(tables, metrics: dict, alpha: float) -> list[Decision]:
    """Per model: the within-category partial r(model SD, human SD | both means and their
    squares) of arousal, the estimate the decision reads (CI rule)."""
    from emoface.analysis.common import interval_outcome

    return [Decision(r["model_id"], "within-category partial r(model SD, human SD | both means, "
                     "their squares), arousal",
                     [Estimate("", r["r_partial_means"], r["r_partial_low"], r["r_partial_high"])],
                     [], interval_outcome(num(r["r_partial_low"]), num(r["r_partial_high"])))
            for r in rows(tables("main"), field="arousal")]


# --- the calibration simulator's design (emoface/analysis/simulate.py) ------------------------


def _simulated_spec(effect: float) -> dict:
    """effect: the simulated rater's ``sd_link``, how much its digit-distribution width rises per
    scale point of the image's human SD (0: no link; both SDs still shrink near 1 and 9)."""
    return {"models": [f"simulated/gemma3-4b?sd_link={effect:g}"]}


def _simulated_estimate(result: AblationResult) -> float:
    """The decided estimate: partial r of the SDs given the means, arousal (mean over models)."""
    return float(np.mean([r["r_partial_means"] for r in result.metrics["rows"]
                          if r["field"] == "arousal"]))


def _simulated_parts(result: AblationResult) -> dict[str, str]:
    """The sensitivity analyses' outcomes (common over models, else cannot tell)."""
    by = result.metrics["outcome_by_adjustment"]
    return {k: (by[0][k] if len({b[k] for b in by}) == 1 else "cannot_tell")
            for k in ("relative_sd", "unadjusted")}


SIMULATED_DESIGN = SimulatedDesign(
    "A11", "sd_link: digit-distribution width added per scale point of the image's human SD "
    "(0: no link beyond the bounded scale, the simulator's default)",
    _simulated_spec, (0.0,), 0.1, "the plan gives no size: sd_link 0.1, a small partial r "
    "(about 0.15 at 1,440 stimuli)", (0.0, 0.025, 0.05, 0.1, 0.2), _simulated_estimate,
    _simulated_parts)


REPORT = ReportSpec(
    "Does the model's uncertainty mirror human disagreement within a category?", decisions,
    "models", (View("main", (
        MODEL, FIELD, Col("n", "n"), Col("flagged", "n_flagged"),
        Col("mean SD, model", "mean_model_sd"), Col("mean SD, humans", "mean_human_sd"),
        ci("partial r(model SD, human SD | means) [CI] (decision)", "r_partial_means",
           "r_partial_low", "r_partial_high"),
        ci("r(model SD, human SD) [CI] (unadjusted)", "r_sd_human_sd", "r_sd_low", "r_sd_high"),
        ci("r(SD relative to its bound) [CI]", "r_relative_sd", "r_relative_low",
           "r_relative_high"),
        ci("r(entropy, human SD) [CI]", "r_entropy_human_sd", "r_entropy_low",
           "r_entropy_high"),
        Col("W1, distribution", "mean_w1_distribution"), Col("W1, answer", "mean_w1_answer"),
        ci("W1 answer − distribution [CI]", "w1_answer_minus_distribution", "w1_diff_low",
           "w1_diff_high"))),))


ABLATION = Ablation(
    id="A11", name="calibration against humans", priority=4, tiers=("extended",),
    paper_section="the project's own (not in the plan): uncertainty vs human disagreement",
    headline=Headline("main", "r_partial_means", "r_partial_low", "r_partial_high", None),  # DVC
    hypothesis="Where humans disagree more about an image, the model's digit distribution is "
               "wider (within an emotion category).",
    interpretation="Within-category r(model SD, human SD) with its CI above 0 => the model's "
                   "uncertainty mirrors human disagreement; below 0 => it runs against it.",
    planned_hours=None, needs="no new calls: the baseline's digit distributions and the norms",
    work=work, analysis=analysis, figures=figures, report=REPORT,
    analysis_seconds=2.0,  # CPU s on the embedded set (emoface/planning.py)
    simulated_design=SIMULATED_DESIGN,
)
