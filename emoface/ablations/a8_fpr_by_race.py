"""A8: false-positive rate of "angry" by race. Analysis of the baseline predictions.

The question: is "angry" over-attributed to one race among faces that are not angry?

Per model (docs/analysis-plan.md, A8):

* FPR = share of non-angry faces labelled angry, per race, with Wilson CIs. Refusals and
  unparseable answers are not "not angry": the primary FPR excludes them from the denominator
  (``fpr``); ``fpr_incl_refusals`` counts them as not angry. Out-of-set words are answers (not
  angry) and stay in.
* The decision: the identity-cluster-robust logistic GLM's race term (odds ratio of the
  higher-FPR race vs the reference), Holm over the models; FPR difference with Newcombe's
  hybrid-score CI; a population-averaged GEE (exchangeable within identity) as sensitivity check.
* Accuracy and kappa by race (an accuracy gap is not over-attribution).
* Ratings: one linear mixed model per model and one for both models together, sum (deviation)
  coding, random intercept per identity; the joint Wald test of race + race x emotion (and of
  model x race in the joint model). Every fit is tried with L-BFGS, BFGS and CG (Powell when
  none converges); the best converged log-likelihood is kept and a spread > 0.01 between
  converged optimizers is reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emoface.ablations.base import Ablation, baseline_only

if TYPE_CHECKING:
    import polars as pl

    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext


NON_ANSWERS = ("refused", "unparseable")
OPTIMIZERS = ("lbfgs", "bfgs", "cg")
LLF_TOLERANCE = 0.01


def _wald(fit, terms: list[str]) -> tuple[float, float, int]:
    """Joint Wald chi2 of ``terms`` (one constraint row per term, all params as columns)."""
    if not terms:
        return np.nan, np.nan, 0
    names = list(fit.params.index)
    r = np.zeros((len(terms), len(names)))
    for i, t in enumerate(terms):
        r[i, names.index(t)] = 1
    w = fit.wald_test(r, scalar=True)
    return float(w.statistic), float(w.pvalue), len(terms)


def fit_lmm(formula: str, pdf, groups: str = "identity") -> tuple[object, dict]:
    """Fit a MixedLM (REML) with each optimizer; the best converged log-likelihood wins."""
    import warnings

    import statsmodels.formula.api as smf

    fits, notes = {}, set()
    for opt in OPTIMIZERS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fit = smf.mixedlm(formula, pdf, groups=groups).fit(reml=True, method=[opt])
            except (ValueError, np.linalg.LinAlgError) as err:
                notes.add(f"{opt}: {type(err).__name__}")
                continue
        notes |= {type(w.message).__name__ for w in caught}
        fits[opt] = fit
    conv = {k: f for k, f in fits.items() if f.converged and np.isfinite(f.llf)}
    if not conv:  # a slower, derivative-free last resort
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fits["powell"] = smf.mixedlm(formula, pdf, groups=groups).fit(
                    reml=True, method=["powell"])
            except (ValueError, np.linalg.LinAlgError) as err:
                notes.add(f"powell: {type(err).__name__}")
        notes |= {type(w.message).__name__ for w in caught}
        conv = {k: f for k, f in fits.items() if f.converged and np.isfinite(f.llf)}
    pool = conv or fits
    if not pool:
        return None, {"converged": False, "optimizer": "", "llf": np.nan, "llf_spread": np.nan,
                      "optimizers_disagree": False, "fit_warnings": ", ".join(sorted(notes))}
    best_opt = max(pool, key=lambda k: pool[k].llf)
    llfs = [f.llf for f in conv.values()]
    spread = float(max(llfs) - min(llfs)) if llfs else np.nan
    return pool[best_opt], {
        "converged": bool(conv), "optimizer": best_opt, "llf": float(pool[best_opt].llf),
        "n_optimizers_converged": len(conv), "llf_spread": spread,
        "optimizers_disagree": bool(np.isfinite(spread) and spread > LLF_TOLERANCE),
        "fit_warnings": ", ".join(sorted(notes))}


def _race_terms(fit) -> tuple[list[str], list[str]]:
    names = [n for n in fit.fe_params.index if "C(race" in n]
    return [n for n in names if ":" not in n], [n for n in names if ":" in n]


def mixed_model(df: pl.DataFrame, field: str) -> dict:
    """One model's ratings: rating ~ race * emotion (sum coding), identity intercepts."""
    import polars as pl

    pdf = df.select("identity", "race", "intended", pl.col(field).alias("rating")).drop_nulls() \
        .to_pandas()
    fit, info = fit_lmm("rating ~ C(race, Sum) * C(intended, Sum)", pdf)
    out = {"field": field, **info}
    if fit is None:
        return out
    main, inter = _race_terms(fit)
    chi, p, k = _wald(fit, main + inter)
    mchi, mp, _ = _wald(fit, main)
    ichi, ip, _ = _wald(fit, inter)
    return {**out, "race_joint_wald_chi2": chi, "race_joint_df": k, "race_joint_p": p,
            # with sum coding the race main effect is averaged over emotions
            "race_effect_avg": float(fit.fe_params[main[0]]) if main else np.nan,
            "race_term": main[0] if main else "", "race_main_p": mp,
            "race_x_emotion_wald_chi2": ichi, "race_x_emotion_p": ip,
            "identity_variance": float(fit.cov_re.iloc[0, 0])}


def joint_mixed_model(frames: dict[str, pl.DataFrame], field: str) -> dict:
    """Both (all) study models in one LMM with a model x race term (sum coding)."""
    import polars as pl

    pdf = pl.concat([df.select("identity", "race", "intended", pl.col(field).alias("rating"))
                     .with_columns(pl.lit(m).alias("model_id"))
                     for m, df in frames.items()]).drop_nulls().to_pandas()
    fit, info = fit_lmm("rating ~ C(model_id, Sum) * C(intended, Sum) + C(race, Sum) * "
                        "C(intended, Sum) + C(model_id, Sum):C(race, Sum)", pdf)
    out = {"field": field, "models": ", ".join(frames), **info}
    if fit is None:
        return out
    race = [n for n in fit.fe_params.index if "C(race" in n and "C(model_id" not in n]
    mxr = [n for n in fit.fe_params.index if "C(race" in n and "C(model_id" in n]
    chi, p, k = _wald(fit, race)
    mchi, mp, mk = _wald(fit, mxr)
    return {**out, "race_joint_wald_chi2": chi, "race_joint_df": k, "race_joint_p": p,
            "model_x_race_wald_chi2": mchi, "model_x_race_df": mk, "model_x_race_p": mp}


def _reference_race(races: list[str]) -> str:
    """The odds ratio compares each race with Korean faces when present (the plan's contrast)."""
    return "korean" if "korean" in races else races[-1]


def _binary_fits(non: pl.DataFrame, alpha: float) -> dict:
    """Cluster-robust logistic GLM (decision) and exchangeable GEE (sensitivity) of said_angry."""
    import warnings

    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    pdf = non.select("said_angry", "race", "identity").to_pandas()
    pdf["said_angry"] = pdf["said_angry"].astype(float)
    groups = pdf["identity"].astype("category").cat.codes
    reference = _reference_race(sorted(set(pdf["race"])))
    formula = f"said_angry ~ C(race, Treatment(reference='{reference}'))"
    out = {}
    try:
        fit = smf.glm(formula, pdf, family=sm.families.Binomial()).fit(
            cov_type="cluster", cov_kwds={"groups": groups})
        term = [t for t in fit.params.index if t.startswith("C(race")][0]
        lo_or, hi_or = np.exp(fit.conf_int(alpha).loc[term])
        out.update(term=term, odds_ratio=float(np.exp(fit.params[term])), or_low=float(lo_or),
                   or_high=float(hi_or), p=float(fit.pvalues[term]))
    except (ValueError, np.linalg.LinAlgError, IndexError) as err:
        out.update(term="", odds_ratio=np.nan, or_low=np.nan, or_high=np.nan, p=np.nan,
                   error=str(err))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gee = smf.gee(formula, "identity", pdf, family=sm.families.Binomial(),
                          cov_struct=sm.cov_struct.Exchangeable()).fit()
        term = [t for t in gee.params.index if t.startswith("C(race")][0]
        lo, hi = np.exp(gee.conf_int(alpha).loc[term])
        out.update(gee_odds_ratio=float(np.exp(gee.params[term])), gee_or_low=float(lo),
                   gee_or_high=float(hi), gee_p=float(gee.pvalues[term]))
    except (ValueError, np.linalg.LinAlgError, IndexError) as err:
        out.update(gee_odds_ratio=np.nan, gee_or_low=np.nan, gee_or_high=np.nan, gee_p=np.nan,
                   gee_error=str(err))
    return out


def _fpr_rows(m: str, df: pl.DataFrame, alpha: float) -> list[dict]:
    import polars as pl
    from statsmodels.stats.proportion import proportion_confint

    from emoface.analysis import metrics as M

    non = df.filter(pl.col("intended") != "angry")
    rows = []
    for race, g in non.group_by("race", maintain_order=True):
        said = (g["emotion"] == "angry").fill_null(False).to_numpy() & \
            g["emotion_status"].is_in(M.USABLE).to_numpy()
        answered = ~g["emotion_status"].is_in(NON_ANSWERS).to_numpy()
        k, n, n_all = int(said.sum()), int(answered.sum()), g.height
        lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson") if n else (np.nan,) * 2
        lo2, hi2 = proportion_confint(k, n_all, alpha=alpha, method="wilson")
        angry = df.filter((pl.col("intended") == "angry") & (pl.col("race") == race[0]))
        rows.append({"model_id": m, "race": race[0], "false_angry": k, "n_not_angry": n,
                     "n_refused_or_unparseable": n_all - n,
                     "fpr": k / n if n else np.nan, "fpr_low": lo, "fpr_high": hi,
                     "fpr_incl_refusals": k / n_all, "fpr_incl_refusals_low": lo2,
                     "fpr_incl_refusals_high": hi2,
                     "tpr_angry": float((angry["emotion"] == "angry").mean())})
    return rows


def _by_race(m: str, df: pl.DataFrame, emotions) -> list[dict]:
    from emoface.analysis import metrics as M
    from emoface.analysis.stats import cohens_kappa

    rows = []
    for race, g in df.group_by("race", maintain_order=True):
        t, p = M.label_codes(g, emotions)
        keep = p >= 0
        table = np.zeros((len(emotions),) * 2)
        np.add.at(table, (t[keep], p[keep]), 1)
        kap, _, lo, hi = cohens_kappa(table) if keep.any() else (np.nan,) * 4
        rows.append({"model_id": m, "race": race[0], "accuracy": float(np.mean(t == p)),
                     "kappa": kap, "kappa_low": lo, "kappa_high": hi})
    return rows


def analysis(ctx: AnalysisContext) -> AblationResult:
    """A8 for every study model (the decision: cluster-robust logistic GLM, Holm over models)."""
    import polars as pl
    from scipy import stats

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, word
    from emoface.analysis.stats import newcombe_diff_ci

    fpr_rows, tests, lmm, conf, frames, acc = [], [], [], [], {}, []
    for m in ctx.models:
        df = ctx.predictions(m)
        frames[m] = df
        fpr_rows += _fpr_rows(m, df, ctx.a.alpha)
        acc += _by_race(m, df, ctx.emotions)
        non = df.filter((pl.col("intended") != "angry")
                        & ~pl.col("emotion_status").is_in(NON_ANSWERS)).with_columns(
            ((pl.col("emotion") == "angry") & pl.col("emotion_status").is_in(M.USABLE))
            .fill_null(False).alias("said_angry"))
        counts = non.group_by("race").agg(pl.col("said_angry").sum().alias("yes"),
                                          (~pl.col("said_angry")).sum().alias("no")).sort("race")
        chi2, p_chi = (stats.chi2_contingency(counts.select("yes", "no").to_numpy())[:2]
                       if counts["yes"].sum() > 0 and counts.height > 1 else (np.nan, np.nan))
        tests.append({"model_id": m, "chi2": chi2, "chi2_p": p_chi,
                      **_binary_fits(non, ctx.a.alpha)})
        for f in M.FIELDS:
            lmm.append({"model_id": m, **mixed_model(df, f)})
        for race, g in df.group_by("race", maintain_order=True):
            conf.append(M.confusion(g, ctx.emotions).with_columns(
                pl.lit(m).alias("model_id"), pl.lit(race[0]).alias("race")))
    joint = [joint_mixed_model(frames, f) for f in M.FIELDS] if len(frames) > 1 else []
    fpr = pl.DataFrame(fpr_rows).sort("model_id", "race")
    C.add_holm(tests)
    races = set(fpr["race"])
    verdicts, outcomes = [], []
    for t in tests:
        f = {r["race"]: r for r in fpr.filter(pl.col("model_id") == t["model_id"]).iter_rows(
            named=True)}
        if {"black", "korean"} <= races:
            hi_r, lo_r = f["black"], f["korean"]
        else:
            ordered = sorted(f.values(), key=lambda r: -r["fpr"])
            hi_r, lo_r = ordered[0], ordered[-1]
        d_lo, d_hi = newcombe_diff_ci(hi_r["false_angry"], hi_r["n_not_angry"],
                                      lo_r["false_angry"], lo_r["n_not_angry"], ctx.a.alpha)
        t.update(fpr_diff=hi_r["fpr"] - lo_r["fpr"], fpr_diff_low=d_lo, fpr_diff_high=d_hi,
                 contrast=f"{hi_r['race']} - {lo_r['race']}")
        sig = np.isfinite(t["p_holm"]) and t["p_holm"] < ctx.a.alpha
        o = (C.SUPPORTS if sig and hi_r["fpr"] > lo_r["fpr"] else
             C.NOT_SUPPORTED if sig else C.CANNOT_TELL)
        t["outcome"] = o
        outcomes.append(o)
        verdicts.append(f"{t['model_id']}: FPR({hi_r['race']}) {fmt(hi_r['fpr'], 3)} "
                        f"[{fmt(hi_r['fpr_low'], 3)}, {fmt(hi_r['fpr_high'], 3)}] vs "
                        f"FPR({lo_r['race']}) {fmt(lo_r['fpr'], 3)} [{fmt(lo_r['fpr_low'], 3)}, "
                        f"{fmt(lo_r['fpr_high'], 3)}] (refusals excluded; counted as not angry: "
                        f"{fmt(hi_r['fpr_incl_refusals'], 3)} vs "
                        f"{fmt(lo_r['fpr_incl_refusals'], 3)}), difference "
                        f"{fmt(t['fpr_diff'], 3)} [{fmt(d_lo, 3)}, {fmt(d_hi, 3)}] (Newcombe); "
                        f"odds ratio {fmt(t['odds_ratio'])} [{fmt(t['or_low'])}, "
                        f"{fmt(t['or_high'])}], identity-clustered p = {fmt(t['p'], 4)} (Holm "
                        f"{fmt(t['p_holm'], 4)}; GEE p = {fmt(t['gee_p'], 4)}); TPR on angry "
                        f"faces {fmt(hi_r['tpr_angry'])} vs {fmt(lo_r['tpr_angry'])} -> {word(o)}")
    lmm_df = pl.DataFrame(lmm)
    test_df = pl.DataFrame(tests)
    joint_df = pl.DataFrame(joint) if joint else None
    disagree = bool(lmm_df["optimizers_disagree"].any()) or (
        bool(joint_df["optimizers_disagree"].any()) if joint else False)
    return AblationResult(
        "A8", "A8 (rule: FPR(Black) > FPR(Korean) with the identity-clustered logistic test "
        f"significant after Holm => over-attribution; family: {len(tests)} model(s)): "
        + "; ".join(verdicts)
        + (". Mixed-model optimizers disagree by > 0.01 in log-likelihood for some fit (see "
           "mixed_models)" if disagree else ""), C.combine(outcomes),
        tables={"main": fpr, "tests": test_df, "mixed_models": lmm_df,
                **({"joint_mixed_model": joint_df} if joint else {}),
                "accuracy_by_race": pl.DataFrame(acc), "confusion_by_race": pl.concat(conf)},
        plots={"fpr_by_race": fpr.select("model_id", "race", "fpr", "fpr_low", "fpr_high")},
        metrics={"fpr": fpr.to_dicts(), "tests": test_df.to_dicts(),
                 "mixed_models": lmm_df.to_dicts(), "joint_mixed_model": joint,
                 "accuracy_by_race": acc, "family": "models",
                 "all_mixed_models_converged": bool(lmm_df["converged"].all()),
                 "optimizers_disagree": disagree},
        simulated=C.any_simulated(list(frames.values())), provenance=C.provenance(list(frames.values())))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import errorbars, new_figure, save

    d = result.plots["fpr_by_race"]
    fig, (ax,) = new_figure("A8: share of non-angry faces labelled angry (Wilson CIs)",
                            result.simulated)
    labels = [f"{m}\n{r}" for m, r in zip(d["model_id"], d["race"], strict=True)]
    errorbars(ax, labels, d["fpr"], d["fpr_low"], d["fpr_high"], color="C3")
    ax.set_ylabel("false-positive rate of 'angry'")
    return [save(fig, folder / "fpr_by_race.png")]


ABLATION = Ablation(
    id="A8", name="FPR by race", priority=3, tiers=("minimal", "complete", "extended"),
    paper_section="Section 4.5",
    hypothesis="Angry is over-attributed to one race group among faces that are not angry.",
    interpretation="FPR(Black) > FPR(Korean) => real over-attribution, not an accuracy gap.",
    planned_hours=0.5, needs="analysis of the baseline predictions",
    work=baseline_only, analysis=analysis, figures=figures,
    analysis_seconds=18.0,  # CPU s on the embedded set (emoface/planning.py)
)
