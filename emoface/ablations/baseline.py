"""The baseline analysis: the study models and the FER classifier(s) side by side (context-carry,
T = 0), the tables every ablation's figures are read against.

Loaded by the registry like the ablation modules (:func:`emoface.ablations.run_analysis`), with
its analysis code imported inside the function, so that planning a run stays light and the
registry never imports the analysis package (no import cycle through ``emoface.config``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext


def analysis(ctx: AnalysisContext) -> AblationResult:
    """The study models and the FER classifier(s) side by side (FER gives labels only)."""
    import polars as pl

    from emoface.ablations.base import BASELINE
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, provenance

    models = list(dict.fromkeys([*ctx.models, *ctx.params.models.fer]))
    frames = {(m, BASELINE.condition_id): ctx.predictions(m) for m in models}
    table = M.metrics_table(frames, ctx.emotions, alpha=ctx.a.alpha, n_boot=ctx.a.bootstrap,
                            seed=ctx.a.seed)
    first = next(iter(frames.values()))
    human = M.human_within_category_sd(first)
    human_rater = M.human_single_rater_within_category_sd(first)
    conf = pl.concat([M.confusion(df, ctx.emotions).with_columns(pl.lit(m).alias("model_id"))
                      for (m, _), df in frames.items()])
    lines = [f"{r['model_id']}: accuracy {fmt(r['accuracy'])}, kappa {fmt(r['kappa'])} "
             f"[{fmt(r['kappa_low'])}, {fmt(r['kappa_high'])}] (6 x 6, {int(r['n_excluded'])} "
             f"answers outside the set excluded; 7-column kappa {fmt(r['kappa7'])}), "
             + ("no valence/arousal (a classifier)" if r["model_id"].startswith("fer/") else
                f"arousal r {fmt(r['arousal_r'])}, within-category SD of arousal by intended "
                f"emotion {fmt(r['arousal_within_category_sd'])} (one human rater, same images "
                f"{fmt(r['arousal_human_rater_within_category_sd'])}; human means "
                f"{fmt(r['arousal_human_within_category_sd'])}; correctly labelled images "
                f"{fmt(r['arousal_within_correct_sd'])} vs one rater "
                f"{fmt(r['arousal_human_rater_within_correct_sd'])} (means "
                f"{fmt(r['arousal_human_within_correct_sd'])}); by the model's own label "
                f"{fmt(r['arousal_within_label_sd'])} vs one rater "
                f"{fmt(r['arousal_human_rater_within_label_sd'])} (means "
                f"{fmt(r['arousal_human_within_label_sd'])}))")
             for r in table.iter_rows(named=True)]
    return AblationResult(
        "baseline", "Baseline (context-carry, T = 0): " + "; ".join(lines), "not_applicable",
        tables={"main": table, "confusion": conf},
        metrics={"models": {r["model_id"]: {k: v for k, v in r.items() if k != "model_id"}
                            for r in table.iter_rows(named=True)},
                 "human_within_category_sd": human,
                 "human_single_rater_within_category_sd": human_rater},
        plots={"within_category_sd": table.select("model_id", "valence_within_category_sd",
                                                  "arousal_within_category_sd")},
        simulated=bool(table["simulated"].any()),
        provenance=provenance(list(frames.values())))
