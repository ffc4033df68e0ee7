"""A8: false-positive rate of "angry" by race. Analysis of the baseline predictions.

The question: is "angry" over-attributed to one race among faces that are not angry?

Per model (docs/analysis-plan.md, A8):

* FPR = share of non-angry faces labelled angry, per race, with Wilson CIs. Refusals and
  unparseable answers are not "not angry": the primary FPR excludes them from the denominator
  (``fpr``); ``fpr_incl_refusals`` counts them as not angry. Out-of-set words are answers (not
  angry) and stay in.
* The decision: an identity-level permutation test of the FPR difference (the higher-FPR race
  of the plan's contrast minus the other): race is fixed per identity, so race labels are
  permuted across identities within gender; two-sided p, Holm over the models; the FPR
  difference's Newcombe hybrid-score CI must agree in direction. Valid with sparse and zero cells
  (1 false "angry" of 600 against 0 of 600 is "cannot tell").
* Sensitivity (reported, not decided on): the identity-cluster-robust logistic GLM's race term and
  a population-averaged GEE (exchangeable within identity), flagged ``separated`` when a race has
  no (or only) "angry" answers or the fitted log odds ratio runs away (|log OR| > 10): their
  p-values are then meaningless.
* ``tpr_angry``: share of angry faces labelled angry with refusals/unparseable answers dropped
  from the denominator; ``tpr_angry_incl_refusals`` counts them as not angry.
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

from emoface.ablations.base import Ablation, Headline, baseline_only
from emoface.ablations.report_spec import (
    FIELD,
    MODEL,
    OUTCOME,
    Col,
    Decision,
    Estimate,
    ReportSpec,
    View,
    ci,
    num,
)

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


SEPARATION_LOG_OR = 10.0  # |log odds ratio| beyond this: the fit has (quasi-)separated


def _binary_fits(non: pl.DataFrame, alpha: float) -> dict:
    """Cluster-robust logistic GLM and exchangeable GEE of said_angry (sensitivity analyses),
    flagged ``separated`` when a race has zero (or only) "angry" answers or |log OR| > 10."""
    import warnings

    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    pdf = non.select("said_angry", "race", "identity").to_pandas()
    pdf["said_angry"] = pdf["said_angry"].astype(float)
    groups = pdf["identity"].astype("category").cat.codes
    reference = _reference_race(sorted(set(pdf["race"])))
    formula = f"said_angry ~ C(race, Treatment(reference='{reference}'))"
    yes = pdf.groupby("race")["said_angry"].agg(["sum", "count"])
    zero_cell = bool(((yes["sum"] == 0) | (yes["sum"] == yes["count"])).any())
    out = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # separation warnings: flagged below instead
            fit = smf.glm(formula, pdf, family=sm.families.Binomial()).fit(
                cov_type="cluster", cov_kwds={"groups": groups})
            term = [t for t in fit.params.index if t.startswith("C(race")][0]
            lo_or, hi_or = np.exp(fit.conf_int(alpha).loc[term])
        out.update(term=term, odds_ratio=float(np.exp(fit.params[term])), or_low=float(lo_or),
                   or_high=float(hi_or), p=float(fit.pvalues[term]),
                   glm_separated=zero_cell or not abs(fit.params[term]) <= SEPARATION_LOG_OR)
    except (ValueError, np.linalg.LinAlgError, IndexError) as err:
        out.update(term="", odds_ratio=np.nan, or_low=np.nan, or_high=np.nan, p=np.nan,
                   glm_separated=zero_cell, error=str(err))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gee = smf.gee(formula, "identity", pdf, family=sm.families.Binomial(),
                          cov_struct=sm.cov_struct.Exchangeable()).fit()
            term = [t for t in gee.params.index if t.startswith("C(race")][0]
            lo, hi = np.exp(gee.conf_int(alpha).loc[term])
        out.update(gee_odds_ratio=float(np.exp(gee.params[term])), gee_or_low=float(lo),
                   gee_or_high=float(hi), gee_p=float(gee.pvalues[term]),
                   gee_separated=zero_cell or not abs(gee.params[term]) <= SEPARATION_LOG_OR)
    except (ValueError, np.linalg.LinAlgError, IndexError) as err:
        out.update(gee_odds_ratio=np.nan, gee_or_low=np.nan, gee_or_high=np.nan, gee_p=np.nan,
                   gee_separated=zero_cell, gee_error=str(err))
    out["separated"] = bool(out["glm_separated"] or out["gee_separated"])
    return out


def said_angry_frame(df: pl.DataFrame) -> pl.DataFrame:
    """The non-angry faces with an answer (refusals/unparseable left out) and ``said_angry``."""
    import polars as pl

    from emoface.analysis import metrics as M

    return df.filter((pl.col("intended") != "angry")
                     & ~pl.col("emotion_status").is_in(NON_ANSWERS)).with_columns(
        ((pl.col("emotion") == "angry") & pl.col("emotion_status").is_in(M.USABLE))
        .fill_null(False).alias("said_angry"))


def identity_counts(non: pl.DataFrame) -> pl.DataFrame:
    """Per identity: its race and gender (fixed per identity), false "angry" answers ``k`` and
    answered non-angry faces ``n`` (from :func:`said_angry_frame`)."""
    import polars as pl

    from emoface.errors import DataError

    g = non.group_by("identity").agg(
        pl.col("race").n_unique().alias("_races"), pl.col("gender").n_unique().alias("_genders"),
        pl.col("race").first(), pl.col("gender").first(),
        pl.col("said_angry").sum().cast(pl.Int64).alias("k"), pl.len().cast(pl.Int64).alias("n"))
    bad = g.filter((pl.col("_races") > 1) | (pl.col("_genders") > 1))
    if bad.height:
        raise DataError(f"identity {bad['identity'][0]} has more than one race or gender in the "
                        "manifest; A8 permutes race by identity and needs one per identity")
    return g.drop("_races", "_genders").sort("identity")


def fpr_permutation_test(ids: pl.DataFrame, high: str, low: str, n_perm: int,
                         seed: int) -> dict:
    """FPR(high) - FPR(low) with its identity-level permutation p (two-sided).

    ``ids`` has one row per identity (:func:`identity_counts`): race, gender, k, n. Race labels
    are permuted across identities within gender (every other column stays), FPR(race) =
    sum k / sum n over the identities carrying that race. Exact (every arrangement once) when
    there are at most ``n_perm`` arrangements, else ``n_perm`` random ones with
    p = (b + 1) / (n_perm + 1). A permutation that leaves a race without answers gives no
    difference and never counts as extreme."""
    from emoface.analysis.stats import permutation_p_two_sided, stratified_permutations

    race = ids["race"].to_numpy().astype(str)
    gender = ids["gender"].to_numpy().astype(str)
    k = ids["k"].to_numpy().astype(float)
    n = ids["n"].to_numpy().astype(float)

    def diff(labels: np.ndarray) -> np.ndarray:
        hi, lo = (labels == high).astype(float), (labels == low).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return hi @ k / (hi @ n) - lo @ k / (lo @ n)

    observed = float(diff(race[None])[0])
    perms, exact = stratified_permutations(race, gender, n_perm, np.random.default_rng(seed))
    null = diff(perms)
    return {"fpr_diff": observed, "p": permutation_p_two_sided(observed, null, exact=exact),
            "n_permutations": int(perms.shape[0]), "permutation_exact": bool(exact)}


def fpr_outcome(p_adjusted: float, diff: float, diff_low: float, diff_high: float,
                alpha: float) -> str:
    """A8's rule: the (Holm-adjusted) permutation p < alpha AND the Newcombe CI of the FPR
    difference on the same side of 0 as the difference: higher FPR for the plan's first race
    => supports, lower => does not support; otherwise cannot tell."""
    from emoface.analysis import common as C

    if not (np.isfinite(p_adjusted) and p_adjusted < alpha and np.isfinite(diff)):
        return C.CANNOT_TELL
    if diff > 0 and diff_low > C.EPS:
        return C.SUPPORTS
    if diff < 0 and diff_high < -C.EPS:
        return C.NOT_SUPPORTED
    return C.CANNOT_TELL


def _tpr(angry: pl.DataFrame) -> dict:
    """Share of angry faces labelled angry: ``tpr_angry`` drops refusals/unparseable answers from
    the denominator, ``tpr_angry_incl_refusals`` counts them as not angry."""
    from emoface.analysis import metrics as M

    said = (angry["emotion"] == "angry").fill_null(False).to_numpy() & \
        angry["emotion_status"].is_in(M.USABLE).to_numpy()
    answered = ~angry["emotion_status"].is_in(NON_ANSWERS).to_numpy()
    return {"n_angry": angry.height, "n_angry_answered": int(answered.sum()),
            "tpr_angry": float(said[answered].mean()) if answered.any() else np.nan,
            "tpr_angry_incl_refusals": float(said.mean()) if angry.height else np.nan}


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
                     **_tpr(angry)})
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


def _contrast(f: dict[str, dict]) -> tuple[dict, dict]:
    """(first, second) race rows of the plan's contrast: Black vs Korean when both are present,
    else the highest- vs the lowest-FPR race."""
    if {"black", "korean"} <= set(f):
        return f["black"], f["korean"]
    ordered = sorted(f.values(), key=lambda r: -r["fpr"])
    return ordered[0], ordered[-1]


def analysis(ctx: AnalysisContext) -> AblationResult:
    """A8 for every study model (the decision: identity-level permutation test of the FPR
    difference, Holm over models, Newcombe CI in the same direction)."""
    import polars as pl
    from scipy import stats

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, word
    from emoface.analysis.stats import newcombe_diff_ci

    n_perm = C.resamples_for_family(ctx.a.permutations, len(ctx.models), ctx.a.alpha,
                                    floor_count=1)
    fpr_rows, tests, lmm, conf, frames, acc, pairs = [], [], [], [], {}, [], {}
    for m in ctx.models:
        df = ctx.predictions(m)
        frames[m] = df
        rows = _fpr_rows(m, df, ctx.a.alpha)
        fpr_rows += rows
        acc += _by_race(m, df, ctx.emotions)
        hi_r, lo_r = pairs[m] = _contrast({r["race"]: r for r in rows})
        non = said_angry_frame(df)
        counts = non.group_by("race").agg(pl.col("said_angry").sum().alias("yes"),
                                          (~pl.col("said_angry")).sum().alias("no")).sort("race")
        chi2, p_chi = (stats.chi2_contingency(counts.select("yes", "no").to_numpy())[:2]
                       if counts["yes"].sum() > 0 and counts.height > 1 else (np.nan, np.nan))
        fisher = stats.fisher_exact([[hi_r["false_angry"], hi_r["n_not_angry"] - hi_r["false_angry"]],
                                     [lo_r["false_angry"], lo_r["n_not_angry"] - lo_r["false_angry"]]])
        d_lo, d_hi = newcombe_diff_ci(hi_r["false_angry"], hi_r["n_not_angry"],
                                      lo_r["false_angry"], lo_r["n_not_angry"], ctx.a.alpha)
        perm = fpr_permutation_test(identity_counts(non), hi_r["race"], lo_r["race"], n_perm,
                                    ctx.a.seed)
        glm = _binary_fits(non, ctx.a.alpha)
        glm["glm_p"] = glm.pop("p")
        tests.append({"model_id": m, "contrast": f"{hi_r['race']} - {lo_r['race']}", **perm,
                      "fpr_diff_low": d_lo, "fpr_diff_high": d_hi, "chi2": chi2,
                      "chi2_p": p_chi, "fisher_p": float(fisher[1]), **glm})
        for f in M.FIELDS:
            lmm.append({"model_id": m, **mixed_model(df, f)})
        for race, g in df.group_by("race", maintain_order=True):
            conf.append(M.confusion(g, ctx.emotions).with_columns(
                pl.lit(m).alias("model_id"), pl.lit(race[0]).alias("race")))
    joint = [joint_mixed_model(frames, f) for f in M.FIELDS] if len(frames) > 1 else []
    fpr = pl.DataFrame(fpr_rows).sort("model_id", "race")
    C.add_holm(tests)
    verdicts, outcomes = [], []
    for t in tests:
        hi_r, lo_r = pairs[t["model_id"]]
        o = fpr_outcome(t["p_holm"], t["fpr_diff"], t["fpr_diff_low"], t["fpr_diff_high"],
                        ctx.a.alpha)
        t["outcome"] = o
        outcomes.append(o)
        sep = " (separated: a zero cell, not interpretable)" if t["separated"] else ""
        kind = "arrangements, exact" if t["permutation_exact"] else "permutations"
        verdicts.append(f"{t['model_id']}: FPR({hi_r['race']}) {fmt(hi_r['fpr'], 3)} "
                        f"({hi_r['false_angry']}/{hi_r['n_not_angry']}) "
                        f"[{fmt(hi_r['fpr_low'], 3)}, {fmt(hi_r['fpr_high'], 3)}] vs "
                        f"FPR({lo_r['race']}) {fmt(lo_r['fpr'], 3)} "
                        f"({lo_r['false_angry']}/{lo_r['n_not_angry']}) "
                        f"[{fmt(lo_r['fpr_low'], 3)}, {fmt(lo_r['fpr_high'], 3)}] (refusals "
                        f"excluded; counted as not angry: {fmt(hi_r['fpr_incl_refusals'], 3)} vs "
                        f"{fmt(lo_r['fpr_incl_refusals'], 3)}), difference "
                        f"{fmt(t['fpr_diff'], 3)} [{fmt(t['fpr_diff_low'], 3)}, "
                        f"{fmt(t['fpr_diff_high'], 3)}] (Newcombe), identity permutation p = "
                        f"{fmt(t['p'], 4)} (Holm {fmt(t['p_holm'], 4)}; "
                        f"{t['n_permutations']} {kind}); "
                        f"sensitivity: odds ratio {fmt(t['odds_ratio'])} [{fmt(t['or_low'])}, "
                        f"{fmt(t['or_high'])}], identity-clustered GLM p = {fmt(t['glm_p'], 4)}, "
                        f"GEE p = {fmt(t['gee_p'], 4)}{sep}; TPR on angry faces "
                        f"{fmt(hi_r['tpr_angry'])} vs {fmt(lo_r['tpr_angry'])} (refusals "
                        f"dropped; counted: {fmt(hi_r['tpr_angry_incl_refusals'])} vs "
                        f"{fmt(lo_r['tpr_angry_incl_refusals'])}) -> {word(o)}")
    lmm_df = pl.DataFrame(lmm)
    test_df = pl.DataFrame(tests)
    joint_df = pl.DataFrame(joint) if joint else None
    disagree = bool(lmm_df["optimizers_disagree"].any()) or (
        bool(joint_df["optimizers_disagree"].any()) if joint else False)
    return AblationResult(
        "A8", "A8 (rule: FPR(Black) > FPR(Korean) with the identity-level permutation test "
        "(race permuted across identities within gender) significant after Holm and the "
        "Newcombe CI of the difference above 0 => over-attribution; family: "
        f"{len(tests)} model(s)): "
        + "; ".join(verdicts)
        + (". Mixed-model optimizers disagree by > 0.01 in log-likelihood for some fit (see "
           "mixed_models)" if disagree else ""), C.combine(outcomes),
        tables={"main": fpr, "tests": test_df, "mixed_models": lmm_df,
                **({"joint_mixed_model": joint_df} if joint else {}),
                "accuracy_by_race": pl.DataFrame(acc), "confusion_by_race": pl.concat(conf)},
        plots={"fpr_by_race": fpr.select("model_id", "race", "fpr", "fpr_low", "fpr_high")},
        metrics={"fpr": fpr.to_dicts(), "tests": test_df.to_dicts(),
                 "mixed_models": lmm_df.to_dicts(), "joint_mixed_model": joint,
                 "accuracy_by_race": acc, "family": "models", "permutations": n_perm,
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




def decisions(tables, metrics: dict, alpha: float) -> list[Decision]:
    """Per model: the FPR difference with its Newcombe CI and the identity-level permutation p,
    Holm over models (the decision; the odds ratio is a sensitivity analysis)."""
    out = []
    for r in tables("tests").to_dicts():
        out.append(Decision(
            r["model_id"], f"false-'angry' rate difference on non-angry faces, {r['contrast']} "
            "(Newcombe CI; identity-level permutation p)",
            [Estimate("", r["fpr_diff"], r["fpr_diff_low"], r["fpr_diff_high"])],
            [("", num(r["p_holm"]))], r["outcome"] or "cannot_tell", percent=True))
    return out


REPORT = ReportSpec(
    "Is 'angry' over-attributed to one race among faces that are not angry?", decisions,
    "models", (
        View("tests", (
            MODEL, Col("contrast", "contrast", kind="text"),
            ci("FPR difference [CI] (Newcombe)", "fpr_diff", "fpr_diff_low", "fpr_diff_high"),
            Col("permutation p", "p"), Col("p (Holm)", "p_holm"), OUTCOME,
            ci("odds ratio [CI] (sensitivity)", "odds_ratio", "or_low", "or_high"),
            Col("GLM p", "glm_p"), Col("GEE p", "gee_p"), Col("separated", "separated"),
            Col("Fisher p", "fisher_p")),
             "Decision: identity-level permutation test of the FPR difference, with its Newcombe "
             "CI in the same direction; the clustered logistic model and GEE are sensitivity "
             "analyses"),
        View("main", (MODEL, Col("race", "race", kind="text"),
                      Col("labelled angry", "false_angry"), Col("non-angry faces", "n_not_angry"),
                      Col("refused or unparseable", "n_refused_or_unparseable"),
                      ci("FPR [CI]", "fpr", "fpr_low", "fpr_high"),
                      Col("FPR, refusals as not angry", "fpr_incl_refusals"),
                      Col("TPR on angry faces", "tpr_angry")), "False-positive rate by race"),
        View("mixed_models", (MODEL, FIELD, Col("race χ² (joint)", "race_joint_wald_chi2"),
                              Col("df", "race_joint_df", kind="int"), Col("p", "race_joint_p"),
                              Col("race × emotion p", "race_x_emotion_p"),
                              Col("converged", "converged")),
             "Ratings by race: linear mixed models")))


ABLATION = Ablation(
    id="A8", name="FPR by race", priority=3, tiers=("minimal", "complete", "extended"),
    paper_section="Section 4.5",
    headline=Headline("tests", "fpr_diff", "fpr_diff_low", "fpr_diff_high", "p_holm"),  # DVC metrics
    hypothesis="Angry is over-attributed to one race group among faces that are not angry.",
    interpretation="FPR(Black) > FPR(Korean) => real over-attribution, not an accuracy gap.",
    planned_hours=0.5, needs="analysis of the baseline predictions",
    work=baseline_only, analysis=analysis, figures=figures, report=REPORT,
    analysis_seconds=18.0,  # CPU s on the embedded set (emoface/planning.py)
)
