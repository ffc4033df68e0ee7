"""A6: more VLMs. The baseline protocol on the extra models of ``ablations.A6.models``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, field_validator

from emoface.ablations.base import BASELINE, Ablation, Headline, WorkItem, baseline_items, predictions
from emoface.ablations.report_spec import (
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
    """Per model: the ratio of its within-category SD of arousal to ONE human rater's over the
    same images and groups (the human means' as a sensitivity analysis), with an identity-bootstrap
    CI; the pattern generalises when N >= 4 and every model's ratio is below 1 (Holm over
    models)."""
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
    first = next(iter(frames.values()))
    human = M.human_within_category_sd(first)
    human_rater = M.human_single_rater_within_category_sd(first)
    ratios, signal = [], []
    for (m, _), df in frames.items():
        w = C.boot_weights(ctx, df["identity"].to_list(), n_boot, family_size=len(models))
        x = df["arousal"].to_numpy().astype(float)
        h = df["arousal_mean"].to_numpy().astype(float)
        keep = np.isfinite(x)
        for g in M.GROUPINGS:
            pm, sm = C.grouped(df, x, g, w, keep)
            ph, sh = C.grouped(df, h, g, w, keep)  # the human means (sensitivity)
            pr = float(M.w_grouped_single_rater_sd(df, "arousal", g, np.ones((1, df.height)),
                                                   keep)[0])
            sr = M.w_grouped_single_rater_sd(df, "arousal", g, w, keep)  # one rater (primary)
            row = {"model_id": m, "grouping": g, "model_sd": pm, "human_rater_sd": pr,
                   "human_means_sd": ph}
            for key, pref, sref in (("ratio", pr, sr), ("ratio_means", ph, sh)):
                point = pm / pref if pref > 0 else np.nan
                with np.errstate(invalid="ignore", divide="ignore"):
                    samples = sm / sref
                lo, hi = M.percentile_ci(samples, ctx.a.alpha, point)
                row.update({key: point, f"{key}_low": lo, f"{key}_high": hi,
                            f"{key}_p": bc_pvalue(samples, point, 1.0)})
            row["p"] = row.pop("ratio_p")
            ratios.append(row)
            signal.append(_signal_row(ctx, m, df, x, g, w, keep))
    n = len(models)

    def rule(fam: list[dict], p_key: str, ratio_key: str, prefix: str) -> str:
        C.add_holm(fam, p_key, f"{prefix}p_holm")
        for r in fam:
            r[f"{prefix}collapsed"] = bool(r[f"{prefix}p_holm"] < ctx.a.alpha
                                           and r[ratio_key] < 1)
            r[f"{prefix}wider"] = bool(r[f"{prefix}p_holm"] < ctx.a.alpha and r[ratio_key] > 1)
        n_col = sum(r[f"{prefix}collapsed"] for r in fam)
        return (C.CANNOT_TELL if n < 4 else C.SUPPORTS if n_col == n
                else C.NOT_SUPPORTED if any(r[f"{prefix}wider"] for r in fam) else C.CANNOT_TELL)

    overall, overall_means, signal_overall = {}, {}, {}
    for g in M.GROUPINGS:
        fam = [r for r in ratios if r["grouping"] == g]
        overall[g] = rule(fam, "p", "ratio", "")
        overall_means[g] = rule(fam, "ratio_means_p", "ratio_means", "means_")
        sfam = [r for r in signal if r["grouping"] == g]
        signal_overall[g] = rule(sfam, "p", "signal_ratio", "")
        C.add_holm(sfam, "r_p", "r_p_holm")
    signal_outcome, reading, both, line = C.reading_line(
        overall, signal_overall, spread=C.RATER_SPREAD, agreement=C.RATER_SIGNAL,
        notes=C.RATER_NOTES)
    sig = {r["model_id"]: r for r in signal if r["grouping"] == "intended"}
    ratio_df = pl.DataFrame(ratios)
    prim = ratio_df.filter(pl.col("grouping") == "intended")
    table = table.join(prim.select("model_id", pl.col("ratio").alias("arousal_sd_ratio_human"),
                                   pl.col("ratio_low").alias("arousal_sd_ratio_low"),
                                   pl.col("ratio_high").alias("arousal_sd_ratio_high"),
                                   pl.col("p_holm").alias("arousal_sd_ratio_p_holm"),
                                   pl.col("ratio_means").alias("arousal_sd_ratio_human_means")),
                       on="model_id", how="left")
    counts = {g: int(ratio_df.filter((pl.col("grouping") == g) & pl.col("collapsed")).height)
              for g in M.GROUPINGS}
    counts_means = {g: int(ratio_df.filter((pl.col("grouping") == g)
                                           & pl.col("means_collapsed")).height)
                    for g in M.GROUPINGS}
    per_model = "; ".join(f"{r['model_id']} {fmt(r['ratio'])} [{fmt(r['ratio_low'])}, "
                          f"{fmt(r['ratio_high'])}] (Holm p {fmt(r['p_holm'], 4)}; against the "
                          f"human means {fmt(r['ratio_means'])}; signal ratio "
                          f"{fmt(s_['signal_ratio'])} [{fmt(s_['signal_ratio_low'])}, "
                          f"{fmt(s_['signal_ratio_high'])}] (Holm p {fmt(s_['p_holm'], 4)}), "
                          f"within-category r with the human means {fmt(s_['r'])} "
                          f"[{fmt(s_['r_low'])}, {fmt(s_['r_high'])}])"
                          for r in prim.iter_rows(named=True) for s_ in [sig[r["model_id"]]])
    verdict = (f"A6 (rule: N >= 4 models and every model's ratio of within-category SD of arousal"
               f" to ONE human rater's (same images, intended emotion) has a CI below 1 after "
               f"Holm => it generalises; signal: the same rule on the signal ratio, the model's "
               f"within-category slope on the human means over one independent rater's; each "
               f"family: {n} models, Holm): {counts['intended']} of {n} models collapse "
               f"(correctly labelled images: {counts['correct']}; own label: {counts['label']}); "
               f"ratios to one human rater (SD {fmt(human_rater['arousal'])} on all images; the "
               f"means' {fmt(human['arousal'])}): {per_model}; kappa range "
               f"{fmt(table['kappa'].min())}-{fmt(table['kappa'].max())}"
               + C.definitions_line(overall)
               + line
               + f". Sensitivity, against the human means (a mean of many raters spreads less "
               f"than one rater): {counts_means['intended']} of {n} collapse -> "
               f"{C.word(C.across_definitions(overall_means))}")
    return AblationResult("A6", verdict, C.across_definitions(overall),
                          tables={"main": table, "sd_ratios": ratio_df,
                                  "signal": pl.DataFrame(signal)},
                          plots={"models": table.select("model_id", "kappa",
                                                        "arousal_within_category_sd",
                                                        "arousal_sd_ratio_human")},
                          metrics={"n_models": n, "human_within_category_sd": human,
                                   "human_single_rater_within_category_sd": human_rater,
                                   "reference": "one human rater",
                                   "collapsed_by_grouping": counts,
                                   "outcome_by_grouping": overall,
                                   "vs_human_means": {
                                       "collapsed_by_grouping": counts_means,
                                       "outcome_by_grouping": overall_means,
                                       "outcome": C.across_definitions(overall_means)},
                                   "family": "models",
                                   "signal": {"rows": signal,
                                              "outcome_by_grouping": signal_overall,
                                              "outcome": signal_outcome, "both_rules": both,
                                              "reading": reading, "family": "models"},
                                   "rows": table.to_dicts(), "ratios": ratio_df.to_dicts()},
                          simulated=bool(table["simulated"].any()),
                          provenance=C.provenance(list(frames.values())))


def _signal_row(ctx: AnalysisContext, model: str, df, x: np.ndarray, g: str, w: np.ndarray,
                keep: np.ndarray) -> dict:
    """The signal in a model's within-category spread: its pooled within-category r and slope on
    the human means, and the slope relative to one independent human rater's (the reliability
    of the means within category), with identity-bootstrap CIs; p of the ratio against 1."""
    from emoface.analysis import metrics as M
    from emoface.analysis.stats import bc_pvalue

    one = np.ones((1, df.height))
    rows, cats = M.grouping(df, g)
    h = df["arousal_mean"].to_numpy().astype(float)
    if "arousal_sd" in df.columns and "n_raters" in df.columns:
        with np.errstate(invalid="ignore", divide="ignore"):
            v = df["arousal_sd"].to_numpy().astype(float) ** 2 \
                / df["n_raters"].to_numpy().astype(float)
    else:
        v = np.full(df.height, np.nan)
    ok = rows & keep & np.isfinite(x) & np.isfinite(h) & np.isfinite(v)
    cats_all = np.full(df.height, "", dtype=object)
    cats_all[rows] = cats
    cat = cats_all[ok].astype(str)
    (r1, b1), (rs, bs) = (M.w_within_signal(x[ok], h[ok], cat, ww[:, ok]) for ww in (one, w))
    lam1, lams = (M.w_rater_slope(h[ok], v[ok], cat, ww[:, ok]) for ww in (one, w))
    row = {"model_id": model, "grouping": g, "n_images": int(ok.sum()), "r": float(r1[0]),
           "slope": float(b1[0]), "rater_slope": float(lam1[0])}
    with np.errstate(invalid="ignore", divide="ignore"):
        point = float(b1[0] / lam1[0]) if lam1[0] > 0 else np.nan
        ratio = bs / lams
    for key, est, samples, null in (("r", row["r"], rs, 0.0), ("slope", row["slope"], bs, None),
                                    ("signal_ratio", point, ratio, 1.0)):
        lo, hi = M.percentile_ci(samples, ctx.a.alpha, est)
        row.update({key: est, f"{key}_low": lo, f"{key}_high": hi})
        if null is not None:
            row[f"{key}_p"] = bc_pvalue(samples, est, null)
    row["p"] = row.pop("signal_ratio_p")
    return row


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import errorbars, new_figure, save

    d = result.tables["main"]
    fig, axes = new_figure("A6: kappa and collapse across models (95 % CIs)", result.simulated, 2)
    errorbars(axes[0], d["model_id"], d["kappa"], d["kappa_low"], d["kappa_high"], zero=None)
    axes[0].set_ylabel("Cohen's kappa")
    errorbars(axes[1], d["model_id"], d["arousal_sd_ratio_human"], d["arousal_sd_ratio_low"],
              d["arousal_sd_ratio_high"], zero=1.0)
    axes[1].set_ylabel("within-category SD / one human rater's (arousal; 1 = as varied)")
    return [save(fig, folder / "models.png")]


def decisions(tables, metrics: dict, alpha: float) -> list[Decision]:
    """Per model (intended emotion): the ratio of its within-category SD to one human rater's
    (the single-rater reference)."""
    return [Decision(
        r["model_id"],
        "within-category SD of arousal / one human rater's (1 = as varied as one rater)",
        [Estimate("", r["ratio"], r["ratio_low"], r["ratio_high"])], [("", num(r["p_holm"]))],
        "collapsed (ratio < 1)" if r["collapsed"] else "wider (ratio > 1)" if r["wider"]
        else "cannot_tell")
        for r in rows(tables("sd_ratios"), grouping="intended")]


REPORT = ReportSpec(
    "Does the collapse of within-category variance generalise beyond two models?",
    decisions, None,  # its rule counts models (N >= 4, every ratio below 1)
    (View("main", (
        MODEL, Col("accuracy", "accuracy"), ci("κ [CI]", "kappa", "kappa_low", "kappa_high"),
        Col("arousal SD within category", "arousal_within_category_sd"),
        ci("ratio to humans [CI]", "arousal_sd_ratio_human", "arousal_sd_ratio_low",
           "arousal_sd_ratio_high"), Col("p (Holm)", "arousal_sd_ratio_p_holm"))),))


ABLATION = Ablation(
    id="A6", name="more VLMs", priority=2, tiers=("competitive", "complete", "extended"),
    headline=Headline("main", "arousal_sd_ratio_human", "arousal_sd_ratio_low",
                      "arousal_sd_ratio_high", "arousal_sd_ratio_p_holm"),  # its DVC metrics row
    paper_section="generalisation",
    hypothesis="The findings generalise beyond two models.",
    interpretation="The same pattern (kappa, collapse) across N >= 4 models => it generalises.",
    planned_hours=4.0, needs="baseline protocol on the extra models",
    work=work, analysis=analysis, figures=figures, params=A6Params, report=REPORT,
    analysis_seconds=2.0,  # CPU s on the embedded set (emoface/planning.py)
)
