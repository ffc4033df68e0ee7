"""A7: real faces. The baseline protocol on the real-face set (``real_faces`` in params.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emoface.ablations.base import BASELINE, Ablation, Headline, WorkItem, baseline_items, predictions
from emoface.ablations.report_spec import (
    MODEL,
    OUTCOME,
    Col,
    ReportSpec,
    View,
    ci,
    paired_decisions,
)

if TYPE_CHECKING:
    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(
        params, (*models, *params.models.fer), [BASELINE], stimulus_set=params.real_faces.name)


def kappa_with_cluster_se(truth: np.ndarray, pred: np.ndarray, cluster: np.ndarray, k: int,
                          w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cohen's kappa and its identity-cluster-robust (delta-method) SE per row of 0/1 weights.

    ``truth``/``pred`` are label indices (rows with pred < 0 must be removed first), ``cluster``
    integer codes sorted ascending (rows of one identity together), ``w`` (R, n) says which rows
    belong to the sample in each of R rows. With po the observed and pe the chance agreement,
    r / c the truth / prediction shares, row i's influence on kappa is
    [(a_i - po)(1 - pe) + (po - 1)(c[t_i] + r[p_i] - 2 pe)] / (1 - pe)^2 (a_i = 1 when t_i = p_i),
    and Var = G / (G - 1) sum over identities of (their summed influence)^2 / N^2, G the
    identities present. With one row per identity this is the large-sample (Fleiss, Cohen &
    Everitt 1969) variance of kappa."""
    agree = (truth == pred).astype(float)
    n_rows = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        po = (w * agree).sum(1) / n_rows
        r = np.stack([(w * (truth == j)).sum(1) for j in range(k)], 1) / n_rows[:, None]
        c = np.stack([(w * (pred == j)).sum(1) for j in range(k)], 1) / n_rows[:, None]
        pe = (r * c).sum(1)
        kappa = (po - pe) / (1 - pe)
        infl = ((agree[None] - po[:, None]) * (1 - pe)[:, None]
                + (po - 1)[:, None] * (c[:, truth] + r[:, pred] - 2 * pe[:, None])
                ) / ((1 - pe) ** 2)[:, None]
        starts = np.flatnonzero(np.r_[True, cluster[1:] != cluster[:-1]])
        sums = np.add.reduceat(w * infl, starts, axis=1)  # (R, identities)
        present = np.add.reduceat(w, starts, axis=1) > 0
        g = present.sum(1)
        var = g / (g - 1) * (sums**2).sum(1) / n_rows**2
    return kappa, np.sqrt(var)


def kappa_difference_test(sets: Sequence[tuple[np.ndarray, np.ndarray, Sequence[str]]], k: int,
                          n_perm: int, seed: int, alpha: float) -> dict:
    """kappa(first set) - kappa(second set): a studentized permutation test of set labels by
    identity, and the interval that inverts it.

    Each set is (truth, pred, identity) with label indices (pred -1 = not usable, left out). The
    identities of both sets are pooled and the set labels permuted across identities (every
    identity keeps all its images; each set keeps its number of identities). The statistic is
    T = d / sqrt(SE1^2 + SE2^2) with identity-cluster-robust SEs (:func:`kappa_with_cluster_se`);
    studentizing keeps the test's size near alpha when the two sets differ in other ways than
    kappa (Chung & Romano 2013), and it is exact when they do not. p = (b + 1) / (N + 1), b the
    permutations with |T*| >= |T|. Interval: d +/- q SE with q the j-th largest |T*|,
    j = ceil(alpha (N + 1)) - 1, so it excludes 0 exactly when p < alpha."""
    truth, pred, ident, in_first = [], [], [], []
    for j, (t, p, ids) in enumerate(sets):
        keep = np.asarray(p) >= 0
        truth.append(np.asarray(t)[keep])
        pred.append(np.asarray(p)[keep])
        ident.append(np.array([f"{j}:{i}" for i in np.asarray(ids)[keep]]))
        in_first.append(np.full(keep.sum(), j == 0))
    truth, pred, ident = np.concatenate(truth), np.concatenate(pred), np.concatenate(ident)
    order = np.argsort(ident, kind="stable")
    truth, pred, ident = truth[order], pred[order], ident[order]
    names, cluster = np.unique(ident, return_inverse=True)
    first = np.array([n.startswith("0:") for n in names])
    rng = np.random.default_rng(seed)
    perms = np.vstack([first, rng.permuted(np.tile(first, (n_perm, 1)), axis=1)])  # row 0: data
    w1 = perms[:, cluster].astype(float)
    k1, s1 = kappa_with_cluster_se(truth, pred, cluster, k, w1)
    k2, s2 = kappa_with_cluster_se(truth, pred, cluster, k, 1 - w1)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(s1**2 + s2**2)
        stat = (k1 - k2) / se
    d, se0, t0 = float(k1[0] - k2[0]), float(se[0]), float(stat[0])
    null = np.abs(stat[1:])
    if not (np.isfinite(t0) and se0 > 0):
        p, q = float("nan"), float("nan")
    else:
        p = float((np.sum(null >= abs(t0)) + 1) / (n_perm + 1))
        j = int(np.ceil(round(alpha * (n_perm + 1), 9))) - 1
        ranked = np.sort(np.where(np.isfinite(null), null, -np.inf))[::-1]
        q = float(ranked[j - 1]) if j >= 1 else float("inf")
    return {"kappa_first": float(k1[0]), "kappa_second": float(k2[0]), "difference": d,
            "se": se0, "t": t0, "critical_t": q, "diff_low": d - q * se0,
            "diff_high": d + q * se0, "p": p, "n_permutations": n_perm}


def analysis(ctx: AnalysisContext) -> AblationResult:
    """kappa on AI minus real faces: studentized permutation test of set labels by identity."""
    import polars as pl

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, word

    real = ctx.params.real_faces.name
    models = list(dict.fromkeys([*ctx.models, *ctx.params.models.fer]))
    n_boot = ctx.a.secondary_bootstrap
    n_perm = C.resamples_for_family(ctx.a.permutations, len(models), ctx.a.alpha, floor_count=1)
    rows, frames, diffs = [], [], []
    k = len(ctx.emotions)
    for m in models:
        sets = []
        for name in (ctx.params.stimuli.set_name, real):
            df = ctx.predictions(m, set_name=name)
            frames.append(df)
            met = M.core_metrics(df, ctx.emotions, alpha=ctx.a.alpha, n_boot=n_boot,
                                 seed=ctx.a.seed)
            t, p = M.label_codes(df, ctx.emotions)
            sets.append((t, p, df["identity"].to_list()))
            has_norms = df["valence_mean"].is_not_null().any()
            rows.append({"model_id": m, "stimulus_set": name,
                         "faces": "AI (synthetic)" if name == ctx.params.stimuli.set_name
                         else ("real (DEMO: synthetic stand-in)"
                               if (df["stimulus_source"] == "synthetic_demo").all() else "real"),
                         "has_norms": bool(has_norms), **met})
        res = kappa_difference_test(sets, k, n_perm, ctx.a.seed, ctx.a.alpha)
        diffs.append({"model_id": m, "kappa_ai": res.pop("kappa_first"),
                      "kappa_real": res.pop("kappa_second"), **res})
    C.add_holm(diffs)
    table = pl.DataFrame(rows)
    demo = (ctx.stimuli(real).manifest["source"] == "synthetic_demo").all()
    verdicts, outcomes = [], []
    if demo:
        verdicts.append(f"NOTE: '{real}' is a synthetic stand-in in FER-2013 format "
                        "(source = synthetic_demo), not real faces; point params.yaml real_faces "
                        "at a real FER-2013 CSV or AffectNet folder to run A7 for real")
    for r in diffs:
        o = C.SUPPORTS if np.isfinite(r["p_holm"]) and r["p_holm"] < ctx.a.alpha else C.CANNOT_TELL
        o = C.CANNOT_TELL if demo else o
        r["outcome"] = o
        outcomes.append(o)
        rl = table.filter((pl.col("model_id") == r["model_id"])
                          & (pl.col("stimulus_set") == real)).row(0, named=True)
        note = "" if rl["has_norms"] else " (the real set has no valence/arousal norms: " \
                                          "rating metrics not computed for it)"
        verdicts.append(f"{r['model_id']}: kappa AI {fmt(r['kappa_ai'])} vs real "
                        f"{fmt(r['kappa_real'])}, difference {fmt(r['difference'])} "
                        f"[{fmt(r['diff_low'])}, {fmt(r['diff_high'])}] (studentized "
                        f"permutation of set labels by identity, {r['n_permutations']} "
                        f"permutations), p = {fmt(r['p'], 4)} (Holm {fmt(r['p_holm'], 4)}){note}"
                        f" -> {word(o)}")
    diff_df = pl.DataFrame(diffs)
    return AblationResult(
        "A7", "A7 (rule: the studentized identity-permutation p of kappa(AI) - kappa(real) below "
        "alpha after Holm => OOD effect;"
        f" family: {len(models)} model(s)): " + "; ".join(verdicts), C.combine(outcomes),
        tables={"main": table, "kappa_difference": diff_df}, plots={"ai_vs_real": table.select(
            "model_id", "faces", "accuracy", "kappa", "kappa_boot_low", "kappa_boot_high")},
        metrics={"rows": table.to_dicts(), "kappa_difference": diff_df.to_dicts(),
                 "family": "models", "permutations": n_perm},
        simulated=C.any_simulated(frames), provenance=C.provenance(frames))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import errorbars, new_figure, save

    d = result.plots["ai_vs_real"]
    fig, (ax,) = new_figure("A7: kappa on AI vs real faces (bootstrap CIs)", result.simulated)
    labels = [f"{m}\n{f}" for m, f in zip(d["model_id"], d["faces"], strict=True)]
    errorbars(ax, labels, d["kappa"], d["kappa_boot_low"], d["kappa_boot_high"])
    return [save(fig, folder / "ai_vs_real.png")]


REPORT = ReportSpec(
    "Does agreement differ between AI-generated and real faces (out of distribution)?",
    paired_decisions("kappa_difference", "kappa on AI − real faces", "difference", "diff_low",
                     "diff_high"),
    "models", (
        View("kappa_difference", (
            MODEL, Col("κ AI faces", "kappa_ai"), Col("κ real faces", "kappa_real"),
            ci("difference [CI]", "difference", "diff_low", "diff_high"), Col("p", "p"),
            Col("p (Holm)", "p_holm"), OUTCOME), "κ on AI minus real faces"),
        View("main", (MODEL, Col("faces", "faces", kind="text"), Col("n", "n"),
                      Col("accuracy", "accuracy"),
                      ci("κ [CI]", "kappa", "kappa_boot_low", "kappa_boot_high")),
             "Agreement by stimulus set")))


ABLATION = Ablation(
    id="A7", name="real faces", priority=3, tiers=("complete", "extended"), paper_section="OOD",
    headline=Headline("kappa_difference", "difference", "diff_low", "diff_high", "p_holm"),  # DVC metrics
    hypothesis="Part of the effects come from AI-generated faces being out of distribution.",
    interpretation="Metrics that differ between AI and real faces => an out-of-distribution "
                   "effect.",
    planned_hours=6.0, needs="baseline protocol on a real-face set, VLMs + FER",
    work=work, analysis=analysis, figures=figures, report=REPORT,
    analysis_seconds=2.0,  # CPU s on the embedded set (emoface/planning.py)
)
