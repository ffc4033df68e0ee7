"""The baseline: the study models and the FER classifier(s) side by side (context-carry, T = 0),
the tables every ablation's figures are read against.

An :class:`~emoface.ablations.base.Ablation` like the others (its work, analysis, figures,
headline, report tables and analysis time are declared here), returned by the registry
(:func:`emoface.ablations.get`, :func:`emoface.ablations.with_baseline`) but not among the
selectable ids: every run does it. It decides nothing, so it has no row in the report's summary;
its section heading is its name. Its analysis code is imported inside the functions, so that
planning a run stays light and the registry never imports the analysis package (no import cycle
through ``emoface.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import Ablation, Headline, baseline_items
from emoface.ablations.report_spec import MODEL, Col, ReportSpec, View, ci

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


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import baseline_figures

    return baseline_figures(result, folder)


REPORT = ReportSpec(question="", views=(View("main", (
    MODEL, Col("n", "n"), Col("accuracy", "accuracy"),
    ci("κ [CI]", "kappa", "kappa_low", "kappa_high"), Col("κ, 7 columns", "kappa7"),
    Col("answers outside the set", "n_excluded"),
    ci("valence r [CI]", "valence_r", "valence_r_low", "valence_r_high"),
    ci("arousal r [CI]", "arousal_r", "arousal_r_low", "arousal_r_high"),
    Col("valence MAE", "valence_mae"), Col("arousal MAE", "arousal_mae"),
    Col("arousal SD within category", "arousal_within_category_sd"),
    Col("one human rater, same images", "arousal_human_rater_within_category_sd"),
    Col("human means, same images", "arousal_human_within_category_sd"))),))


@dataclass(frozen=True)
class Baseline(Ablation):
    """The baseline's section is headed by its name alone (no paper section: it tests nothing)."""

    @property
    def title(self) -> str:
        return self.name


ABLATION = Baseline(
    id="baseline", name="Baseline (context-carry, T = 0)", priority=0, tiers=(),
    paper_section="", hypothesis="", interpretation="", planned_hours=None,
    needs="context-carry at T = 0: every study model and the FER classifier(s)",
    work=baseline_items, analysis=analysis, figures=figures, report=REPORT,
    headline=Headline("main", "kappa", "kappa_low", "kappa_high", None),
    analysis_seconds=2.0,  # CPU s on the embedded set (emoface/planning.py)
    decides=False,
)
