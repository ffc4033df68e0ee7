"""A2: single-shot prompting. One JSON prompt per image instead of the context-carry turns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emoface.ablations.base import Ablation, Headline, WorkItem, baseline_items, predictions
from emoface.ablations.report_spec import (
    GROUPING,
    MODEL,
    OUTCOME,
    Col,
    ReportSpec,
    View,
    ci,
    paired_decisions,
)
from emoface.inference.conditions import Condition

if TYPE_CHECKING:
    import polars as pl

    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params

SINGLE_SHOT = Condition(protocol="single_shot")


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return baseline_items(params, models) + predictions(params, models, [SINGLE_SHOT])


def _grouping_verdicts(table: pl.DataFrame, units: list[str], field: str, alpha: float,
                       positive_supports: bool = True) -> tuple[dict, dict, pl.DataFrame]:
    """Holm over ``units`` (models or contrasts) per grouping; outcome per grouping and overall.

    Returns ({grouping: overall outcome}, {(unit, grouping): outcome}, the family table)."""
    import polars as pl

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M

    fam_rows, per = [], {}
    overall = {}
    for g in M.GROUPINGS:
        metric = f"{field}_{M.GROUPING_COLUMN[g]}"
        rows = [table.filter((pl.col("model_id") == u) & (pl.col("metric") == metric))
                .row(0, named=True) for u in units]
        C.add_holm(rows)
        outs = []
        for r in rows:
            o = C.p_outcome(r["p_holm"], r["difference"], alpha, positive_supports=positive_supports)
            per[(r["model_id"], g)] = o
            outs.append(o)
            fam_rows.append({**r, "grouping": g, "outcome": o})
        overall[g] = C.combine(outs)
    return overall, per, pl.DataFrame(fam_rows)


def analysis(ctx: AnalysisContext) -> AblationResult:
    """Within-category SD of arousal, single-shot minus context-carry, same images."""
    import polars as pl

    from emoface.analysis import common as C
    from emoface.analysis import metrics as M
    from emoface.analysis.common import AblationResult, fmt, word

    single = Condition(protocol="single_shot")
    rows, parse, frames, signal = [], [], [], []
    for m in ctx.models:
        carry, ss = ctx.predictions(m), ctx.predictions(m, single)
        frames += [carry, ss]
        rows += C.paired_rows(ctx, m, carry, ss, "context_carry", "single_shot")
        signal += C.signal_paired_rows(ctx, m, carry, ss, "context_carry", "single_shot")
        for name, df in (("context_carry", carry), ("single_shot", ss)):
            for f in ("emotion", *M.FIELDS):
                counts = df.group_by(f"{f}_status", maintain_order=True).len()
                parse += [{"model_id": m, "protocol": name, "field": f, "status": s, "n": n}
                          for s, n in counts.iter_rows()]
    table = pl.DataFrame(rows)
    overall, per, fam = _grouping_verdicts(table, list(ctx.models), "arousal", ctx.a.alpha)
    signal_overall = C.signal_verdicts(signal, ctx.a.alpha)
    sig = {r["model_id"]: r for r in signal if r["grouping"] == "intended"}
    verdicts = []
    for r in fam.filter(pl.col("grouping") == "intended").iter_rows(named=True):
        s_ = sig[r["model_id"]]
        verdicts.append(f"{r['model_id']}: within-category SD of arousal {fmt(r['context_carry'])}"
                        f" (context-carry) -> {fmt(r['single_shot'])} (single-shot), difference "
                        f"{fmt(r['difference'])} [{fmt(r['diff_low'])}, {fmt(r['diff_high'])}], "
                        f"p = {fmt(r['p'], 4)} (Holm {fmt(r['p_holm'], 4)}) -> "
                        f"{word(r['outcome'])}; within-category r with the human means "
                        f"{fmt(s_['r_context_carry'])} -> {fmt(s_['r_single_shot'])}, difference "
                        f"{fmt(s_['r_difference'])} [{fmt(s_['r_diff_low'])}, "
                        f"{fmt(s_['r_diff_high'])}] (Holm p {fmt(s_['p_holm'], 4)}; slope "
                        f"{fmt(s_['slope_context_carry'])} -> {fmt(s_['slope_single_shot'])}) -> "
                        f"{word(s_['outcome'])}")
    outcome = C.across_definitions(overall)
    signal_outcome, reading, both, line = C.reading_line(overall, signal_overall)
    return AblationResult(
        "A2", "A2 (rule: within-category SD of arousal (intended emotion, same images) rises in "
        f"single-shot => anchoring; signal: the pooled within-category r of arousal with the "
        f"human means, single-shot minus context-carry; each family: {len(ctx.models)} "
        f"model(s), Holm): " + "; ".join(verdicts) + C.definitions_line(overall)
        + line, outcome,
        tables={"main": table, "verdict_tests": fam, "signal": pl.DataFrame(signal),
                "parse_outcomes": pl.DataFrame(parse)},
        plots={"paired_differences": table.select("model_id", "metric", "difference",
                                                   "diff_low", "diff_high")},
        metrics={"rows": table.to_dicts(), "outcome_by_grouping": overall,
                 "family": "arousal x models",
                 "signal": {"rows": signal, "outcome_by_grouping": signal_overall,
                            "outcome": signal_outcome, "both_rules": both, "reading": reading,
                            "family": "arousal x models"}},
        simulated=C.any_simulated(frames), provenance=C.provenance(frames))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    from emoface.analysis.figures import paired_differences_figure

    return [paired_differences_figure(result, "A2: single-shot minus context-carry",
                                      folder / "paired_differences.png")]


REPORT = ReportSpec(
    "Does context-carry prompting suppress within-category variance of arousal?",
    paired_decisions("verdict_tests", "within-category SD of arousal, single-shot − "
                     "context-carry", "difference", "diff_low", "diff_high", grouping="intended"),
    "models", (
        View("verdict_tests", (
            MODEL, GROUPING, Col("metric", "metric", kind="text"),
            Col("context-carry", "context_carry"), Col("single-shot", "single_shot"),
            ci("difference [CI]", "difference", "diff_low", "diff_high"), Col("p", "p"),
            Col("p (Holm)", "p_holm"), OUTCOME),
            "Decision tests (arousal; Holm over models, per grouping)"),
        View("main", (MODEL, Col("metric", "metric", kind="text"),
                      Col("context-carry", "context_carry"), Col("single-shot", "single_shot"),
                      ci("difference [CI]", "difference", "diff_low", "diff_high"),
                      Col("p", "p")), "Paired differences, single-shot − context-carry")))


ABLATION = Ablation(
    id="A2", name="single-shot prompting", priority=1,
    tiers=("minimal", "competitive", "complete", "extended"),
    headline=Headline("verdict_tests", "difference", "diff_low", "diff_high", "p_holm"),
    paper_section="context-carry confound",
    hypothesis="Context-carry anchoring suppresses within-category variance.",
    interpretation="Within-category SD rises in single-shot => context-carry anchoring "
                   "suppresses variance.",
    planned_hours=2.0, needs="one JSON prompt per image, both models",
    work=work, analysis=analysis, figures=figures, report=REPORT,
    analysis_seconds=3.0,  # CPU s on the embedded set (emoface/planning.py)
)
