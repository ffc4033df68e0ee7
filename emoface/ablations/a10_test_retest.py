"""A10: test-retest reliability. Is a model, run again, as consistent as one human rater is with
another? No new model calls: it reads A3's repeats at every temperature > 0.

Per model, temperature and rating field:

* ``icc2`` ICC(2,1) (two-way random effects, absolute agreement, single rating) and ``icc3``
  ICC(3,1) (two-way mixed, consistency), stimuli as targets and repeats as raters, with their
  F-based 95 % CIs, from pingouin's ``intraclass_corr`` (Shrout & Fleiss 1979; McGraw & Wong
  1996). Stimuli missing a rating in any repeat are left out (``n_stimuli`` counts the rest).
* Fleiss' kappa of the emotion labels across repeats (statsmodels; Fleiss 1971), answers outside
  the emotion set as one extra category, with an identity-cluster bootstrap CI.

Against it, the humans' single-rater reliability from the norms (per-image mean, SD, n raters),
the agreement between two DIFFERENT raters, which is a lower bound of one person's test-retest
reliability (a person agrees with themselves at least as well as with another person): above it
is "agrees with itself more than two humans agree", not "more consistent than a person
re-tested"; below it is less consistent than either. One verdict per temperature. The reference
is the one-way random-effects ICC(1,1) of an unbalanced design (each image has its own raters),
``MSB = sum n_i (m_i - m)^2 / (k - 1)``, ``MSW = sum (n_i - 1) s_i^2 / (N - k)``,
``ICC = (MSB - MSW) / (MSB + (n0 - 1) MSW)`` with ``n0 = (N - sum n_i^2 / N) / (k - 1)``
(Shrout & Fleiss 1979 case 1; n0 from the unbalanced one-way ANOVA), CI from the F distribution.

T = 0 is greedy decoding: its repeats are one piece of work (the same requests), not a retest, so
it is left out. ICCs compare consistency relative to the spread between images, so a model whose
ratings barely vary between images can have a low ICC while repeating itself almost exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emoface.ablations.a3_temperature import grid
from emoface.ablations.base import (
    Ablation,
    Headline,
    SimulatedDesign,
    WorkItem,
    baseline_items,
    predictions,
)
from emoface.ablations.report_spec import (
    FIELD,
    MODEL,
    Col,
    Decision,
    Estimate,
    ReportSpec,
    View,
    ci,
    rows,
)

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params

CI_LEVEL = 0.95  # pingouin's intraclass_corr reports 95 % intervals only


def retest_conditions(params: Params) -> list:
    """A3's conditions at T > 0 (each repeat its own seed): the retests A10 reads."""
    return [c for c in grid(params) if c.temperature > 0]


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(params, models, retest_conditions(params))


# pingouin >= 0.7 names the rows ICC(A,1) / ICC(C,1); earlier versions ICC2 / ICC3
_ICC_ROWS = {"ICC2": "icc2", "ICC(A,1)": "icc2", "ICC3": "icc3", "ICC(C,1)": "icc3"}


def icc_table(long: pd.DataFrame, *, targets: str, raters: str, ratings: str) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) with 95 % CIs (pingouin), from long data (one row per rating).

    Returns ``icc2``, ``icc2_low``, ``icc2_high``, ``icc3``, ``icc3_low``, ``icc3_high``, ``f``,
    ``df1``, ``df2``, ``p`` (the F test of ICC(3,1) = 0) and ``n_targets`` (complete targets).
    """
    import warnings

    import pingouin as pg

    saved = dict(pg.options)
    pg.options["round.column.CI95"] = None  # pingouin rounds its CIs to 2 decimals by default
    try:
        with warnings.catch_warnings():  # pandas deprecations inside pingouin, not ours to fix
            warnings.filterwarnings("ignore", module="pingouin")
            out = pg.intraclass_corr(long, targets=targets, raters=raters, ratings=ratings,
                                     nan_policy="omit")
    finally:
        pg.options.clear()
        pg.options.update(saved)
    ci = next(c for c in out.columns if c.startswith("CI95"))  # 'CI95%' in older pingouin
    res: dict[str, float] = {}
    for row in out.to_dict("records"):
        name = _ICC_ROWS.get(row["Type"])
        if name:
            low, high = row[ci]
            res.update({name: float(row["ICC"]), f"{name}_low": float(low),
                        f"{name}_high": float(high)})
            if name == "icc3":
                res.update(f=float(row["F"]), df1=float(row["df1"]), df2=float(row["df2"]),
                           p=float(row["pval"]))
    complete = long.dropna(subset=[ratings]).groupby(targets)[raters].nunique()
    res["n_targets"] = int((complete == long[raters].nunique()).sum())
    return res


def icc1_from_summary(means: np.ndarray, sds: np.ndarray, ns: np.ndarray,
                      alpha: float = 1 - CI_LEVEL) -> dict[str, float]:
    """One rater's reliability, ICC(1,1), from per-target mean, SD (ddof = 1) and rater count.

    One-way random effects (each target rated by its own raters), unbalanced: see the module
    docstring. Returns ``icc1``, ``icc1_low``, ``icc1_high``, ``f``, ``df1``, ``df2``, ``msb``,
    ``msw``, ``n0`` and ``n_targets``. With equal n it equals Shrout & Fleiss's ICC(1,1).
    """
    from scipy.stats import f as f_dist

    m, s, n = (np.asarray(a, dtype=np.float64) for a in (means, sds, ns))
    k, total = m.size, n.sum()
    grand = (n * m).sum() / total
    msb = (n * (m - grand) ** 2).sum() / (k - 1)
    msw = ((n - 1) * s**2).sum() / (total - k)
    n0 = (total - (n**2).sum() / total) / (k - 1)
    df1, df2 = k - 1, total - k
    f = msb / msw
    fl = f / f_dist.ppf(1 - alpha / 2, df1, df2)
    fu = f * f_dist.ppf(1 - alpha / 2, df2, df1)
    return {"icc1": float((msb - msw) / (msb + (n0 - 1) * msw)),
            "icc1_low": float((fl - 1) / (fl + n0 - 1)), "icc1_high": float((fu - 1) / (fu + n0 - 1)),
            "f": float(f), "df1": float(df1), "df2": float(df2), "msb": float(msb),
            "msw": float(msw), "n0": float(n0), "n_targets": int(k)}


def fleiss_kappa_codes(codes: np.ndarray, n_categories: int) -> float:
    """Fleiss' kappa (statsmodels) of a (subjects, raters) array of category codes 0..n-1."""
    from statsmodels.stats.inter_rater import fleiss_kappa

    table = np.stack([(codes == c).sum(axis=1) for c in range(n_categories)], axis=1)
    return float(fleiss_kappa(table, method="fleiss"))


def _kappa_with_ci(ctx: AnalysisContext, frames: list[pl.DataFrame]) -> dict[str, float]:
    """Fleiss' kappa of the labels across repeats and its identity-cluster bootstrap CI."""
    from emoface.analysis import metrics as M

    k = len(ctx.emotions)
    codes = np.stack([np.where((p := M.label_codes(df, ctx.emotions)[1]) >= 0, p, k)
                      for df in frames], axis=1)  # answers outside the set: category k
    point = fleiss_kappa_codes(codes, k + 1)
    w = M.cluster_weights(frames[0]["identity"].to_list(), ctx.a.bootstrap, ctx.a.seed)
    boot = np.array([fleiss_kappa_codes(np.repeat(codes, row.astype(int), axis=0), k + 1)
                     for row in w])
    lo, hi = M.percentile_ci(boot, ctx.a.alpha, point)
    agree = float(np.mean((codes == codes[:, :1]).all(axis=1)))
    return {"fleiss_kappa": point, "kappa_boot_low": lo, "kappa_boot_high": hi,
            "share_labels_all_agree": agree}


def human_reliability(ctx: AnalysisContext) -> list[dict]:
    """The humans' single-rater ICC(1,1) per field from the norms of the study's stimulus set."""
    norms = ctx.stimuli().norms
    if norms is None:
        return []
    return [{"field": f, **icc1_from_summary(norms[f"{f}_mean"].to_numpy(),
                                              norms[f"{f}_sd"].to_numpy(),
                                              norms["n_raters"].to_numpy())}
            for f in ("valence", "arousal")]


def _outcome(model: dict, human: dict | None) -> str:
    if human is None or not np.isfinite([model["icc2_low"], model["icc2_high"]]).all():
        return "cannot_tell"
    if model["icc2_low"] > human["icc1_high"]:
        return "supports"
    if model["icc2_high"] < human["icc1_low"]:
        return "does_not_support"
    return "cannot_tell"


def analysis(ctx: AnalysisContext) -> AblationResult:
    import polars as pl

    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult
    from emoface.analysis.common import fmt as _fmt
    from emoface.analysis.common import provenance as _provenance

    a3 = ctx.params.ablations.A3
    temps = sorted({c.temperature for c in retest_conditions(ctx.params)})
    human = {h["field"]: h for h in human_reliability(ctx)}
    rows, kappas, frames = [], [], []
    if a3.repeats >= 2:
        for m in ctx.models:
            for t in temps:
                reps = [c for c in retest_conditions(ctx.params) if c.temperature == t]
                dfs = [ctx.predictions(m, c) for c in reps]
                frames += dfs
                stacked = pl.concat([d.select("stimulus_id", *M.FIELDS).with_columns(
                    pl.lit(c.repeat).alias("repeat")) for d, c in zip(dfs, reps, strict=True)])
                for f in M.FIELDS:
                    rows.append({"model_id": m, "temperature": t, "field": f,
                                 "n_repeats": len(reps),
                                 **icc_table(stacked.select("stimulus_id", "repeat", f).to_pandas(),
                                             targets="stimulus_id", raters="repeat", ratings=f)})
                kappas.append({"model_id": m, "temperature": t, "n_repeats": len(reps),
                               **_kappa_with_ci(ctx, dfs)})
    table = pl.DataFrame(rows) if rows else pl.DataFrame(schema={"model_id": pl.String})
    verdicts, by_t = [], {}
    h = human.get("arousal")
    for t in temps:
        sub = [r for r in (table.filter(pl.col("field") == "arousal").iter_rows(named=True)
                           if rows else []) if r["temperature"] == t]
        if not sub:
            continue
        outs = [_outcome(r, h) for r in sub]
        by_t[t] = outs[0] if len(set(outs)) == 1 else "cannot_tell"
        verdicts.append(f"T = {t:g}: {by_t[t].replace('_', ' ')} ("
                        + "; ".join(f"{r['model_id']} ICC(2,1) of arousal over {r['n_repeats']} "
                                    f"repeats {_fmt(r['icc2'])} [{_fmt(r['icc2_low'])}, "
                                    f"{_fmt(r['icc2_high'])}] -> {o.replace('_', ' ')}"
                                    for r, o in zip(sub, outs, strict=True)) + ")")
    if not rows:
        verdicts.append("no retest: A3 has no temperature > 0 with at least two repeats "
                        "(params ablations.A3)")
    human_text = (f"humans' single-rater ICC(1,1) of arousal {_fmt(h['icc1'])} "
                  f"[{_fmt(h['icc1_low'])}, {_fmt(h['icc1_high'])}]" if h else
                  "no human norms for this stimulus set")
    # one outcome per temperature, never folded: the ablation's outcome is the common one only
    # when every temperature has it
    values = set(by_t.values())
    outcome = (next(iter(values)) if len(values) == 1 else
               "differs_by_temperature" if values else "not_applicable")
    human_df = pl.DataFrame(list(human.values())) if human else pl.DataFrame()
    kappa_df = pl.DataFrame(kappas) if kappas else pl.DataFrame()
    plot = table.select("model_id", "temperature", "field", "icc2", "icc2_low", "icc2_high",
                        "icc3") if rows else pl.DataFrame()
    return AblationResult(
        "A10", "A10 (rule, per temperature: the model's ICC(2,1) across its own repeats above "
        "the humans' ICC(1,1) between two different raters, 95 % CIs apart, for every model => "
        "supports 'a model run again agrees with itself at least as well as two different humans "
        "agree'; below => does not support. Rater-to-rater reliability is a lower bound of one "
        "person's test-retest reliability (a person agrees with themselves at least as well as "
        "with another person), so 'supports' does not mean 'as consistent as a person re-tested';"
        " 'does not support' means less consistent than two different humans, and so than a "
        f"person re-tested. Each temperature is its own verdict): {human_text}; "
        + "; ".join(verdicts), outcome,
        tables={"main": table, "fleiss_kappa": kappa_df, "human": human_df},
        plots={"icc_by_temperature": plot},
        metrics={"ci_level": CI_LEVEL, "temperatures": temps,
                 "outcome_by_temperature": {f"{t:g}": o for t, o in by_t.items()},
                 "human_reference": "ICC(1,1) between two different raters: a lower bound of "
                                    "one person's test-retest reliability",
                 "temperatures_skipped": [t for t in a3.temperatures if t <= 0],
                 "rows": table.to_dicts(), "fleiss_kappa": kappa_df.to_dicts(),
                 "human": list(human.values())},
        simulated=any(bool(f["simulated"].any()) for f in frames),
        provenance=_provenance(frames) if frames else {"models": []})


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import polars as pl

    from emoface.analysis.figures import new_figure, save

    d = result.plots["icc_by_temperature"]
    if d.is_empty():
        return []
    human = {h["field"]: h for h in result.metrics["human"]}
    fields = ["valence", "arousal"]
    fig, axes = new_figure("A10: ICC(2,1) across repeats vs one human rater (95 % CIs)",
                           result.simulated, len(fields))
    for ax, f in zip(axes, fields, strict=True):
        for i, model in enumerate(d["model_id"].unique(maintain_order=True).to_list()):
            sub = d.filter((pl.col("model_id") == model) & (pl.col("field") == f)).sort(
                "temperature")
            v = sub["icc2"].to_numpy()
            ax.errorbar(sub["temperature"].to_numpy() + 0.01 * i, v,
                        yerr=[v - sub["icc2_low"].to_numpy(), sub["icc2_high"].to_numpy() - v],
                        marker="o", capsize=3, color=f"C{i}", label=model)
        if f in human:
            ax.axhspan(human[f]["icc1_low"], human[f]["icc1_high"], color="grey", alpha=.25)
            ax.axhline(human[f]["icc1"], color="grey", ls="--", lw=1,
                       label="humans: one rater (ICC(1,1))")
        ax.set(xlabel="temperature", ylabel="ICC(2,1)", title=f, ylim=(min(0, ax.get_ylim()[0]),
                                                                        1.02))
        ax.legend(fontsize=6)
    return [save(fig, folder / "icc_by_temperature.png")]


def decisions(tables, metrics: dict, alpha: float) -> list[Decision]:
    """Per model and temperature: ICC(2,1) of arousal against the humans' ICC(1,1) (CI rule)."""
    main = tables("main")
    if main.is_empty() or "field" not in main.columns:
        return []
    h = {x["field"]: x for x in metrics.get("human", [])}.get("arousal")
    vs = (f"; humans' one-rater ICC(1,1) {h['icc1']:.2f} [{h['icc1_low']:.2f}, "
          f"{h['icc1_high']:.2f}]" if h else "")
    return [Decision(f"{r['model_id']}, T = {r['temperature']:g}",
                     f"ICC(2,1) of arousal over {r['n_repeats']} repeats{vs}",
                     [Estimate("", r["icc2"], r["icc2_low"], r["icc2_high"])], [],
                     _outcome(r, h))
            for r in rows(main, field="arousal")]


# --- the calibration simulator's design (emoface/analysis/simulate.py) ------------------------

# A model that perceives each image exactly as the humans' consensus (no label anchoring, no
# perception noise, no collapse), answers the digit nearest its rating (digit width 0.05, labels
# fixed) and adds per-repeat noise: its repeats are distributed like one human rater's answers
# (clip(round(x* + N(0, rater_noise_sd)), 1, 9), emoface/stimuli/generate.py) when the noise SD
# equals the norms' rater noise SD, so its retest ICC equals the humans' single-rater ICC.
_RETEST_RATER = ("anchoring_context=0&perception_noise_sd=0&collapse=0&digit_width=0.05&"
                 "emotion_beta=400")


def _simulated_spec(effect: float) -> dict:
    """effect: how much smaller the per-repeat noise SD is than one human rater's (0 = the
    same: retest ICC = the humans' single-rater ICC; 1 = no noise)."""
    from emoface.config import NormsParams

    if not effect < 1:
        raise ValueError("the per-repeat noise reduction must be below 1 (1 = no noise at all)")
    sd = NormsParams().rater_noise_sd * (1 - effect)
    return {"models": [f"simulated/gemma3-4b?{_RETEST_RATER}&arm_noise_sd={sd:g}"]}


def _simulated_estimate(result: AblationResult) -> float:
    """Mean over models and temperatures of ICC(2,1) minus the humans' ICC(1,1), arousal."""
    human = {h["field"]: h["icc1"] for h in result.metrics["human"]}["arousal"]
    icc = [r["icc2"] for r in result.metrics["rows"] if r["field"] == "arousal"]
    return float(np.mean(icc) - human)


def _simulated_parts(result: AblationResult) -> dict[str, str]:
    return {f"T{t}": o for t, o in result.metrics["outcome_by_temperature"].items()}


SIMULATED_DESIGN = SimulatedDesign(
    "A10", "per-repeat noise SD below one human rater's noise SD, as a share (0: the same, "
    "retest ICC = the humans' single-rater ICC; the model perceives the consensus exactly)",
    _simulated_spec, (0.0,), 0.25,
    "the plan gives no size: a quarter less noise than one human rater (noise SD 0.9 vs 1.2)",
    (0.0, 0.1, 0.25, 0.5), _simulated_estimate, _simulated_parts)


REPORT = ReportSpec(
    "Is a model run again as consistent as one human rater with another?", decisions,
    "models/temperatures", (
        View("main", (MODEL, Col("T", "temperature"), FIELD,
                      Col("repeats", "n_repeats", kind="int"),
                      Col("images", "n_targets", kind="int"),
                      ci("ICC(2,1) [95 % CI]", "icc2", "icc2_low", "icc2_high"),
                      ci("ICC(3,1) [95 % CI]", "icc3", "icc3_low", "icc3_high"))),
        View("human", (FIELD, ci("humans: ICC(1,1) [95 % CI]", "icc1", "icc1_low", "icc1_high"),
                       Col("images", "n_targets", kind="int")), "One human rater (norms)"),
        View("fleiss_kappa", (MODEL, Col("T", "temperature"),
                              Col("repeats", "n_repeats", kind="int"),
                              ci("Fleiss' κ [CI]", "fleiss_kappa", "kappa_boot_low",
                                 "kappa_boot_high"),
                              Col("share of images whose labels agree",
                                  "share_labels_all_agree")), "Labels across repeats")))


ABLATION = Ablation(
    id="A10", name="test-retest reliability", priority=4, tiers=("extended",),
    paper_section="the project's own (not in the plan): rater reliability",
    headline=Headline("main", "icc2", "icc2_low", "icc2_high", None),  # DVC metrics
    hypothesis="A model run again at T > 0 agrees with itself at least as well as two different "
               "human raters agree with each other (at each temperature).",
    interpretation="Per temperature: ICC(2,1) of a model's repeats above the humans' rater-to-rater"
                   " ICC(1,1) (CIs apart) => it agrees with itself more than two humans agree "
                   "(not: more than a person re-tested, whose reliability that ICC only bounds "
                   "from below); below => less consistent than two different humans.",
    planned_hours=None, needs="no new calls: A3's repeats at T > 0 and the human norms",
    work=work, analysis=analysis, figures=figures, report=REPORT,
    analysis_seconds=7.0,  # CPU s on the embedded set (emoface/planning.py)
    simulated_design=SIMULATED_DESIGN,
)
