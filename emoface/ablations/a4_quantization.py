"""A4: FP16 vs 4-bit. Gemma3-4B in both precisions at T = 0 (the 4-bit arm is the baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from emoface.ablations.base import BASELINE, Ablation, Headline, WorkItem, predictions
from emoface.ablations.report_spec import (
    FIELD,
    GROUPING,
    OUTCOME,
    Col,
    ReportSpec,
    View,
    ci,
    paired_decisions,
)
from emoface.config import ModelId, _Frozen, self_quantized_id

if TYPE_CHECKING:
    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params

PLAN_RANGE = (0.20, 0.30)  # the plan's estimate of the share of variance restored at FP16
RANGE_PHRASE = {"inside": "lies inside", "below": "lies below", "above": "lies above",
                "overlaps": "overlaps (neither inside nor outside)"}


class SelfQuantizedParams(_Frozen):
    """A4's second arm: the FP16 weights quantized by the project (mlx-vlm's conversion)."""

    bits: int = Field(4, ge=2, le=8)
    group_size: Literal[32, 64, 128] = 64


class A4Params(_Frozen):
    """``ablations.A4``: the FP16 model, the 4-bit QAT release, the self-quantized arm."""

    fp16: ModelId = "simulated/gemma3-4b-fp16"
    q4: ModelId = "simulated/gemma3-4b"   # the 4-bit QAT release (differs in training too)
    # FP16 vs the same weights quantized here (quantization alone); needs fp16 = mlx/<directory>
    self_quantized: SelfQuantizedParams | None = SelfQuantizedParams()

    def arms(self) -> dict[str, tuple[str, str]]:
        """Contrast name -> (quantized model id, FP16 model id): ``qat`` always, ``self`` when the
        FP16 model is an mlx directory the project can quantize."""
        arms = {"qat": (self.q4, self.fp16)}
        sq = self.self_quantized
        if sq is not None and self.fp16.startswith("mlx/"):
            arms["self"] = (self_quantized_id(self.fp16, sq.bits, sq.group_size), self.fp16)
        return arms


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    # every arm's models: the QAT release, the self-quantized copy (mlx FP16 only), FP16
    arms = params.ablations.A4.arms().values()
    return predictions(params, tuple(dict.fromkeys(m for pair in arms for m in pair)), [BASELINE])


def a4_contrasts(ctx: AnalysisContext) -> list[tuple[str, str]]:
    """(fp16, quantized) model pairs A4 compares (``A4Params.arms``): FP16 vs the 4-bit QAT
    release (training differs too), and FP16 vs the same weights quantized by the project
    (quantization alone) when the FP16 model is an mlx directory."""
    return [(fp, q) for q, fp in ctx.params.ablations.A4.arms().values()]


def _a4_self_note(ctx: AnalysisContext) -> tuple[str, dict]:
    """The sentence and metrics saying whether the quantization-alone contrast ran."""
    cfg = ctx.params.ablations.A4
    if "self" not in cfg.arms():
        return (". Quantization-alone contrast not run: it needs ablations.A4.fp16 as an mlx "
                "model directory (the project quantizes those weights itself)"), {}
    sq = cfg.self_quantized
    q_id = cfg.arms()["self"][0]
    return (f". Quantization alone = {q_id} (the FP16 weights quantized here, {sq.bits}-bit, "
            f"group {sq.group_size})"), {"self_quantized": {"model_id": q_id, "bits": sq.bits,
                                                             "group_size": sq.group_size}}


def _range_word(lo: float, hi: float, rng: tuple[float, float] = PLAN_RANGE) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "cannot be compared with"
    if lo >= rng[0] and hi <= rng[1]:
        return "inside"
    if hi < rng[0]:
        return "below"
    if lo > rng[1]:
        return "above"
    return "overlaps"


def analysis(ctx: AnalysisContext) -> AblationResult:
    """Share of within-category variance restored at FP16: 1 - WCV(q4) / WCV(fp16), WCV = mean
    within-category variance, same images in both arms."""
    import polars as pl

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, word
    from emoface.analysis.stats import bc_pvalue

    rows, restored_rows, frames, signal = [], [], [], []
    for fp16_id, q4_id in a4_contrasts(ctx):
        q4, fp16 = ctx.predictions(q4_id), ctx.predictions(fp16_id)
        frames += [q4, fp16]
        name = f"{q4_id} vs {fp16_id}"
        rows += C.paired_rows(ctx, name, q4, fp16, "q4", "fp16")
        signal += C.signal_paired_rows(ctx, name, q4, fp16, "q4", "fp16")
        w = C.boot_weights(ctx, q4["identity"].to_list())
        for f in M.FIELDS:
            xq, xf = q4[f].to_numpy().astype(float), fp16[f].to_numpy().astype(float)
            for g in M.GROUPINGS:
                keep = C.pair_keep(q4, fp16, f, g)
                vq, sq = C.grouped(q4, xq, g, w, keep, var=True)
                vf, sf = C.grouped(fp16, xf, g, w, keep, var=True)
                point = 1 - vq / vf if vf > 0 else np.nan
                with np.errstate(invalid="ignore", divide="ignore"):
                    samples = 1 - sq / sf
                lo, hi = M.percentile_ci(samples, ctx.a.alpha, point)
                restored_rows.append({
                    "model_id": name, "field": f, "grouping": g, "wcv_q4": vq, "wcv_fp16": vf,
                    "restored": point, "restored_low": lo, "restored_high": hi,
                    "p": bc_pvalue(samples, point), "plan_range": _range_word(lo, hi)})
    table = pl.DataFrame(rows)
    overall = {}
    for g in M.GROUPINGS:
        fam = [r for r in restored_rows if r["field"] == "arousal" and r["grouping"] == g]
        C.add_holm(fam)
        for r in fam:
            r["outcome"] = C.p_outcome(r["p_holm"], r["restored"], ctx.a.alpha)
        overall[g] = C.combine([r["outcome"] for r in fam])
    for r in restored_rows:
        r.setdefault("p_holm", np.nan)
        r.setdefault("outcome", "")
    restored = pl.DataFrame(restored_rows)
    signal_overall = C.signal_verdicts(signal, ctx.a.alpha)
    sig = {r["model_id"]: r for r in signal if r["grouping"] == "intended"}
    verdicts = [f"{r['model_id']}: share of within-category arousal variance restored at FP16 "
                f"{fmt(100 * r['restored'], 1)} % [{fmt(100 * r['restored_low'], 1)}, "
                f"{fmt(100 * r['restored_high'], 1)}], p = {fmt(r['p'], 4)} (Holm "
                f"{fmt(r['p_holm'], 4)}) -> {word(r['outcome'])} the quantization account; the CI "
                f"{RANGE_PHRASE.get(r['plan_range'], r['plan_range'])} the plan's 20-30 % "
                f"estimate; within-category r with the human means {fmt(s_['r_q4'])} (4-bit) -> "
                f"{fmt(s_['r_fp16'])} (FP16), difference {fmt(s_['r_difference'])} "
                f"[{fmt(s_['r_diff_low'])}, {fmt(s_['r_diff_high'])}] (Holm p "
                f"{fmt(s_['p_holm'], 4)}; slope {fmt(s_['slope_q4'])} -> {fmt(s_['slope_fp16'])})"
                f" -> {word(s_['outcome'])}"
                for r in restored_rows if r["field"] == "arousal" and r["grouping"] == "intended"
                for s_ in [sig[r["model_id"]]]]
    outcome = C.across_definitions(overall)
    signal_outcome, reading, both, line = C.reading_line(overall, signal_overall)
    return AblationResult(
        "A4", "A4 (rule: share of within-category variance (intended emotion, same images) "
        "restored at FP16 > 0 => quantization removes variance; the CI compared with the plan's "
        "20-30 %; signal: the pooled within-category r of arousal with the human means, FP16 "
        f"minus 4-bit; each family: {len(a4_contrasts(ctx))} contrast(s), Holm): "
        + "; ".join(verdicts) + C.definitions_line(overall) + line + _a4_self_note(ctx)[0],
        outcome,
        tables={"main": restored, "paired": table, "signal": pl.DataFrame(signal)},
        plots={"paired_differences": table.select("metric", "difference", "diff_low",
                                                   "diff_high")},
        # nested dicts of numbers (DVC metrics show dicts, not lists): contrast/field/grouping
        metrics={"variance_restored": {
            r["model_id"]: {f: {g: {"point": x["restored"], "low": x["restored_low"],
                                    "high": x["restored_high"], "p_holm": x["p_holm"]}
                                for x in restored_rows if x["model_id"] == r["model_id"]
                                and x["field"] == f for g in [x["grouping"]]}
                            for f in M.FIELDS} for r in restored_rows},
                 "restored_rows": restored.to_dicts(), "rows": table.to_dicts(),
                 "outcome_by_grouping": overall, "plan_range": list(PLAN_RANGE),
                 "family": "arousal x contrasts", **_a4_self_note(ctx)[1],
                 "signal": {"rows": signal, "outcome_by_grouping": signal_overall,
                            "outcome": signal_outcome, "both_rules": both, "reading": reading,
                            "family": "arousal x contrasts"}},
        simulated=C.any_simulated(frames), provenance=C.provenance(frames))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import polars as pl

    from emoface.analysis.figures import errorbars, new_figure, paired_differences_figure, save

    paired = result.tables["paired"].select("model_id", "metric", "difference", "diff_low",
                                            "diff_high")
    out = [paired_differences_figure(result, "A4: FP16 minus 4-bit",
                                     folder / "paired_differences.png", table=paired)]
    d = result.tables["main"].filter(pl.col("field") == "arousal")
    fig, (ax,) = new_figure("A4: share of within-category arousal variance restored at FP16 "
                            "(bootstrap CIs; band: the plan's 20-30 %)", result.simulated,
                            width=6.2)
    ax.axhspan(100 * PLAN_RANGE[0], 100 * PLAN_RANGE[1], color="grey", alpha=.2)
    labels = [f"{m}\n{g}" for m, g in zip(d["model_id"], d["grouping"], strict=True)]
    errorbars(ax, labels, 100 * d["restored"], 100 * d["restored_low"],
              100 * d["restored_high"], rotation=20)
    ax.set_ylabel("variance restored (%)")
    out.append(save(fig, folder / "variance_restored.png"))
    return out


REPORT = ReportSpec(
    "Does 4-bit quantization remove within-category variance?",
    paired_decisions("main", "share of within-category variance of arousal restored at FP16",
                     "restored", "restored_low", "restored_high", percent=True, field="arousal",
                     grouping="intended"),
    "contrasts", (View("main", (
        Col("contrast", "model_id", kind="text"), FIELD, GROUPING,
        Col("within-category variance, 4-bit", "wcv_q4"),
        Col("within-category variance, FP16", "wcv_fp16"),
        ci("share restored [CI]", "restored", "restored_low", "restored_high", "pct"),
        Col("p", "p"), Col("p (Holm)", "p_holm"), OUTCOME,
        Col("CI vs the plan's 20-30 %", "plan_range", kind="text"))),))


ABLATION = Ablation(
    id="A4", name="FP16 vs 4-bit", priority=2, tiers=("competitive", "complete", "extended"),
    headline=Headline("main", "restored", "restored_low", "restored_high", "p_holm"),  # its DVC metrics row
    paper_section="quantization share",
    hypothesis="4-bit quantization removes part of the within-category variance.",
    interpretation="Expected a little more variance at FP16 (an estimated 20-30 % restored).",
    planned_hours=3.0, needs="Gemma3-4B in FP16 and 4-bit, T = 0",
    work=work, analysis=analysis, figures=figures, params=A4Params, report=REPORT,
    analysis_seconds=2.0,  # CPU s on the embedded set (emoface/planning.py)
)
