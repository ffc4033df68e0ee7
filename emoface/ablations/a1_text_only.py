"""A1: text-only arousal. No image: the prompt gives only the emotion label, both models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from emoface.ablations.base import Ablation, Headline, WorkItem, baseline_items, predictions
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
from emoface.config import _Frozen
from emoface.inference.conditions import Condition, LabelSource

if TYPE_CHECKING:
    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params

R_HIGH = 0.7  # a "high" label-only correlation (descriptive only since the margin rule)


class A1Params(_Frozen):
    """``ablations.A1``: where the label comes from, and the equivalence margin."""

    label_source: LabelSource = "baseline"
    # equivalence margin for r(human, image) - r(human, label-only) (docs/analysis-plan.md)
    margin: float = Field(0.05, gt=0, lt=1, allow_inf_nan=False)


def text_only(params: Params) -> Condition:
    """The text-only condition (the label from the model's own baseline answer, or intended)."""
    return Condition(protocol="text_only", label_source=params.ablations.A1.label_source)


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(params, models, [text_only(params)])


def _a1_outcome(p_eq: float, p_perc: float, alpha: float) -> str:
    from emoface.analysis import common as C

    if np.isfinite(p_eq) and p_eq < alpha:
        return C.SUPPORTS  # the image adds less than the margin: a language prior
    if np.isfinite(p_perc) and p_perc < alpha:
        return C.NOT_SUPPORTED  # the image adds more than the margin: perception
    return C.CANNOT_TELL


def analysis(ctx: AnalysisContext) -> AblationResult:
    """Does the arousal agreement with humans survive without the image? Decided on
    d = r(human, image) - r(human, label-only) against the equivalence margin (params)."""
    import polars as pl

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, word
    from emoface.analysis.stats import (
        bc_one_sided_p,
        compare_dependent_correlations,
        equivalence_p,
        pearson_with_ci,
    )

    text = Condition(protocol="text_only", label_source=ctx.params.ablations.A1.label_source)
    margin = ctx.params.ablations.A1.margin
    rows, scatter, frames = [], [], []
    for m in ctx.models:
        img, lab = ctx.predictions(m), ctx.predictions(m, text)
        frames += [img, lab]
        for f in M.FIELDS:
            d = img.select("stimulus_id", "identity", pl.col(f).alias("x"),
                           pl.col(f"{f}_mean").alias("h")).join(
                lab.select("stimulus_id", pl.col(f).alias("y")), on="stimulus_id").drop_nulls()
            x, y, h = (d[c].to_numpy().astype(float) for c in ("x", "y", "h"))
            r_xy, lo_xy, hi_xy = pearson_with_ci(x, y, ctx.a.alpha)
            r_hx, r_hy = pearson_with_ci(h, x)[0], pearson_with_ci(h, y)[0]
            test = compare_dependent_correlations(r_hx, r_hy, r_xy, len(x), ctx.a.alpha) \
                if np.isfinite([r_hx, r_hy, r_xy]).all() else None
            w = C.boot_weights(ctx, d["identity"].to_list())
            boot_xy = M.percentile_ci(M.w_pearson(x, y, w), ctx.a.alpha, r_xy)
            diff = r_hx - r_hy
            samples = M.w_pearson(h, x, w) - M.w_pearson(h, y, w)
            boot_diff = M.percentile_ci(samples, ctx.a.alpha, diff)
            rows.append({"model_id": m, "field": f, "n": len(x), "r_image_label": r_xy,
                         "r_image_label_low": lo_xy, "r_image_label_high": hi_xy,
                         "r_image_label_boot_low": boot_xy[0],
                         "r_image_label_boot_high": boot_xy[1],
                         "r_human_image": r_hx, "r_human_label_only": r_hy,
                         "diff_human_r": diff,
                         "williams_t": test.williams_t if test else np.nan,
                         "williams_p": test.williams_p if test else np.nan,
                         "steiger_z": test.steiger_z if test else np.nan,
                         "steiger_p": test.steiger_p if test else np.nan,
                         "zou_low": test.zou_low if test else np.nan,
                         "zou_high": test.zou_high if test else np.nan,
                         "diff_boot_low": boot_diff[0], "diff_boot_high": boot_diff[1],
                         "margin": margin,
                         "p_equivalence": equivalence_p(samples, diff, margin),
                         "p_perception": min(1.0, 2 * bc_one_sided_p(samples, diff, margin)),
                         "in_family": f == "arousal"})
            if f == "arousal":
                scatter.append(d.select("stimulus_id", "x", "y").with_columns(
                    pl.lit(m).alias("model_id")).rename({"x": "arousal_image_label",
                                                         "y": "arousal_label_only"}))
    fam = [r for r in rows if r["in_family"]]
    C.add_holm(fam, "p_equivalence", "p_equivalence_holm")
    C.add_holm(fam, "p_perception", "p_perception_holm")
    for r in rows:
        r.setdefault("p_equivalence_holm", np.nan)
        r.setdefault("p_perception_holm", np.nan)
    table = pl.DataFrame(rows)
    verdicts, outcomes = [], []
    for r in fam:
        o = _a1_outcome(r["p_equivalence_holm"], r["p_perception_holm"], ctx.a.alpha)
        outcomes.append(o)
        verdicts.append(
            f"{r['model_id']}: r(human, image) {fmt(r['r_human_image'])} vs r(human, label-only) "
            f"{fmt(r['r_human_label_only'])}, difference {fmt(r['diff_human_r'], 3)} "
            f"[{fmt(r['diff_boot_low'], 3)}, {fmt(r['diff_boot_high'], 3)}] (identity bootstrap;"
            f" Zou [{fmt(r['zou_low'], 3)}, {fmt(r['zou_high'], 3)}], Williams t = "
            f"{fmt(r['williams_t'])}, p = {fmt(r['williams_p'], 3)}); equivalence p = "
            f"{fmt(r['p_equivalence'], 4)} (Holm {fmt(r['p_equivalence_holm'], 4)}), above-margin "
            f"p = {fmt(r['p_perception'], 4)} (Holm {fmt(r['p_perception_holm'], 4)}); "
            f"r(image, label-only) {fmt(r['r_image_label'])} -> {word(o)}")
    return AblationResult(
        "A1", f"A1 (rule: the CI of r(human, image) - r(human, label-only) inside +/-{margin:g} "
        f"=> language prior; above +{margin:g} => perception; family: arousal x "
        f"{len(fam)} model(s), Holm): " + "; ".join(verdicts), C.combine(outcomes),
        tables={"main": table}, plots={"scatter": pl.concat(scatter)},
        metrics={"margin": margin, "r_high_descriptive": R_HIGH, "rows": table.to_dicts(),
                 "family": "arousal x models"},
        simulated=C.any_simulated(frames), provenance=C.provenance(frames))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import polars as pl

    from emoface.analysis.figures import new_figure, save

    s = result.plots["scatter"]
    models = s["model_id"].unique(maintain_order=True).to_list()
    fig, axes = new_figure("A1: arousal with image+label vs label only", result.simulated,
                           len(models))
    rng = np.random.default_rng(0)
    for ax, model in zip(axes, models, strict=True):
        d = s.filter(pl.col("model_id") == model)
        ax.scatter(d["arousal_label_only"] + rng.uniform(-.2, .2, d.height),
                   d["arousal_image_label"] + rng.uniform(-.2, .2, d.height), s=4, alpha=.4)
        ax.plot([1, 9], [1, 9], color="grey", lw=.8)
        ax.set(xlabel="label-only arousal", ylabel="image + label arousal", title=model,
               xlim=(0.5, 9.5), ylim=(0.5, 9.5))
    return [save(fig, folder / "scatter.png")]


def decisions(tables, metrics: dict, alpha: float) -> list[Decision]:
    """Per model (arousal, the family): the difference of correlations against the margin."""
    out = []
    for r in rows(tables("main"), field="arousal"):
        p_eq, p_perc = num(r["p_equivalence_holm"]), num(r["p_perception_holm"])
        out.append(Decision(
            r["model_id"], f"r(human, image) − r(human, label only), arousal; margin "
            f"±{r['margin']:g}", [Estimate("", r["diff_human_r"], r["diff_boot_low"],
                                           r["diff_boot_high"])],
            [("equivalence", p_eq), ("above margin", p_perc)], _a1_outcome(p_eq, p_perc, alpha)))
    return out


REPORT = ReportSpec(
    "Is the arousal rating reproduced from the emotion label alone, without the image?",
    decisions, "models", (View("main", (
        MODEL, FIELD, Col("n", "n"),
        ci("r(image, label only) [CI]", "r_image_label", "r_image_label_low",
           "r_image_label_high"),
        Col("r(human, image)", "r_human_image"), Col("r(human, label only)", "r_human_label_only"),
        ci("difference [CI]", "diff_human_r", "diff_boot_low", "diff_boot_high"),
        Col("p equivalence", "p_equivalence"), Col("p equivalence (Holm)", "p_equivalence_holm"),
        Col("p above margin", "p_perception"),
        Col("p above margin (Holm)", "p_perception_holm"))),))


ABLATION = Ablation(
    id="A1", name="text-only arousal", priority=1,
    tiers=("minimal", "competitive", "complete", "extended"),
    headline=Headline("main", "diff_human_r", "zou_low", "zou_high", "p_equivalence_holm"),
    paper_section="strength-inversion claim",
    hypothesis="Arousal ratings given the image and label are largely reproduced from the label "
               "alone.",
    interpretation="High corr(image+label arousal, label-only arousal) => the arousal 'advantage' "
                   "is a language prior, not perception.",
    planned_hours=2.0,
    needs="text-only prompts with each model's own baseline label, both models",
    work=work, analysis=analysis, figures=figures, params=A1Params, report=REPORT,
    analysis_seconds=2.0,  # CPU s on the embedded set (emoface/planning.py)
)
