"""A7: real faces. The baseline protocol on the real-face set (``real_faces`` in params.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emoface.ablations.base import BASELINE, Ablation, WorkItem, baseline_items, predictions

if TYPE_CHECKING:
    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(
        params, (*models, *params.models.fer), [BASELINE], stimulus_set=params.real_faces.name)


def analysis(ctx: AnalysisContext) -> AblationResult:
    """kappa on AI minus real faces with an independent (two-sample) identity bootstrap CI."""
    import polars as pl

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, word
    from emoface.analysis.stats import bc_pvalue

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
                        f"[{fmt(r['diff_low'])}, {fmt(r['diff_high'])}] (independent identity "
                        f"bootstrap), p = {fmt(r['p'], 4)} (Holm {fmt(r['p_holm'], 4)}){note}"
                        f" -> {word(o)}")
    diff_df = pl.DataFrame(diffs)
    return AblationResult(
        "A7", "A7 (rule: the CI of kappa(AI) - kappa(real) excludes 0 after Holm => OOD effect;"
        f" family: {len(models)} model(s)): " + "; ".join(verdicts), C.combine(outcomes),
        tables={"main": table, "kappa_difference": diff_df}, plots={"ai_vs_real": table.select(
            "model_id", "faces", "accuracy", "kappa", "kappa_boot_low", "kappa_boot_high")},
        metrics={"rows": table.to_dicts(), "kappa_difference": diff_df.to_dicts(),
                 "family": "models"},
        simulated=C.any_simulated(frames), provenance=C.provenance(frames))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import errorbars, new_figure, save

    d = result.plots["ai_vs_real"]
    fig, (ax,) = new_figure("A7: kappa on AI vs real faces (bootstrap CIs)", result.simulated)
    labels = [f"{m}\n{f}" for m, f in zip(d["model_id"], d["faces"], strict=True)]
    errorbars(ax, labels, d["kappa"], d["kappa_boot_low"], d["kappa_boot_high"])
    return [save(fig, folder / "ai_vs_real.png")]


ABLATION = Ablation(
    id="A7", name="real faces", priority=3, tiers=("complete", "extended"), paper_section="OOD",
    hypothesis="Part of the effects come from AI-generated faces being out of distribution.",
    interpretation="Metrics that differ between AI and real faces => an out-of-distribution "
                   "effect.",
    planned_hours=6.0, needs="baseline protocol on a real-face set, VLMs + FER",
    work=work, analysis=analysis, figures=figures,
    analysis_seconds=2.0,  # CPU s on the embedded set (emoface/planning.py)
)
