"""What every ablation analysis shares: the result record, decision rules and small helpers.

Decision rules (docs/analysis-plan.md): a verdict test gives an estimate, its bootstrap CI and a
p-value that inverts the same (bias-corrected) interval; the p-values of one ablation's family
(the models, contrasts or layers that enter its verdict) are Holm-adjusted, and a direction is
declared only when the adjusted p is below alpha.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from emoface.analysis import metrics as M
from emoface.analysis.stats import bc_pvalue, holm

if TYPE_CHECKING:
    from emoface.analysis.context import AnalysisContext

EPS = 1e-9  # a CI bound within floating-point noise of 0 counts as 0
SUPPORTS, NOT_SUPPORTED, CANNOT_TELL = "supports", "does_not_support", "cannot_tell"
DEFINITION_SENSITIVE = "definition_sensitive"


@dataclass
class AblationResult:
    """Tables, metrics, plots and the verdict of one ablation (or the baseline)."""

    ablation_id: str
    verdict: str
    outcome: str  # supports | does_not_support | cannot_tell | definition_sensitive | n/a
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    plots: dict[str, pl.DataFrame] = field(default_factory=dict)
    simulated: bool = True  # True when ANY number in it comes from the simulated backend
    provenance: dict = field(default_factory=dict)


def interval_outcome(low: float, high: float, *, positive_supports: bool = True) -> str:
    """supports / does_not_support when the CI excludes 0 on one side, else cannot_tell."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return CANNOT_TELL
    if low > EPS:
        return SUPPORTS if positive_supports else NOT_SUPPORTED
    if high < -EPS:
        return NOT_SUPPORTED if positive_supports else SUPPORTS
    return CANNOT_TELL


def p_outcome(p_adjusted: float, estimate: float, alpha: float, *,
              positive_supports: bool = True) -> str:
    """The direction of ``estimate`` when its (Holm-adjusted) p < alpha, else cannot_tell."""
    if not (np.isfinite(p_adjusted) and np.isfinite(estimate)) or p_adjusted >= alpha:
        return CANNOT_TELL
    return SUPPORTS if (estimate > 0) == positive_supports else NOT_SUPPORTED


def combine(outcomes: Sequence[str]) -> str:
    """One outcome for several models/contrasts: the common one, else cannot_tell."""
    return outcomes[0] if outcomes and len(set(outcomes)) == 1 else CANNOT_TELL


def across_definitions(by_grouping: dict[str, str]) -> str:
    """The primary outcome when every within-category grouping agrees, else
    "definition_sensitive" (the report then does not pick one)."""
    values = set(by_grouping.values())
    return next(iter(values)) if len(values) == 1 else DEFINITION_SENSITIVE


def add_holm(rows: list[dict], p_key: str = "p", out_key: str = "p_holm") -> list[dict]:
    """Holm-adjust ``p_key`` over ``rows`` (one family) into ``out_key``; rows are changed."""
    adj = holm([r[p_key] for r in rows])
    for r, a in zip(rows, adj, strict=True):
        r[out_key] = float(a)
    return rows


def fmt(x: float | None, d: int = 2) -> str:
    """A number for a verdict line; "nan" when missing."""
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def word(outcome: str) -> str:
    """An outcome as words ("does not support")."""
    return outcome.replace("_", " ").replace("definition sensitive", "definition-sensitive")


def provenance(frames: list[pl.DataFrame]) -> dict:
    """The models and versions behind a result, sorted so identical inputs give identical JSON."""
    cols = ["model_id", "backend", "model_digest", "backend_version", "quantization",
            "prompt_version", "parser_version", "simulated"]
    rows = pl.concat([f.select(cols).unique() for f in frames]).unique().sort(cols)
    return {"models": rows.to_dicts()}


def boot_weights(ctx, identities, n_boot: int | None = None) -> np.ndarray:
    """Identity-cluster bootstrap weights with the analysis seed."""
    return M.cluster_weights(identities, n_boot or ctx.a.bootstrap, ctx.a.seed)


def any_simulated(frames: Sequence[pl.DataFrame]) -> bool:
    return any(bool(f["simulated"].any()) for f in frames)


def definitions_line(overall: dict[str, str]) -> str:
    """"; by grouping: ..." for a verdict, flagging groupings that disagree."""
    return ("; by grouping: " + ", ".join(f"{g} {word(o)}" for g, o in overall.items())
            + (" -> definition-sensitive" if len(set(overall.values())) > 1 else ""))


# --- paired arms (A2, A4) and within-category SDs (A2, A4, A6) -------------------------------

def _correct(df: pl.DataFrame) -> np.ndarray:
    return M.label_array(df) == df["intended"].to_numpy()


def pair_keep(a: pl.DataFrame, b: pl.DataFrame, f: str, g: str) -> np.ndarray:
    """The images both arms rated (and, for the ``correct`` grouping, both labelled correctly)."""
    keep = a[f].is_not_null().to_numpy() & b[f].is_not_null().to_numpy()
    return keep & _correct(a) & _correct(b) if g == "correct" else keep


def grouped(df: pl.DataFrame, x: np.ndarray, g: str, w: np.ndarray, keep: np.ndarray,
            var: bool = False) -> tuple[float, np.ndarray]:
    """(point estimate, bootstrap replicates) of a within-category SD (or variance)."""
    point = M.w_grouped_sd(df, x, g, np.ones((1, df.height)), keep, var)[0]
    return float(point), M.w_grouped_sd(df, x, g, w, keep, var)


def paired_rows(ctx: AnalysisContext, model: str, a: pl.DataFrame, b: pl.DataFrame,
                label_a: str, label_b: str) -> list[dict]:
    """b - a for kappa, r, MAE, SD and the within-category SD under every grouping, over the
    same images in both arms, with identity-bootstrap BC CIs and p (the images are paired)."""
    if list(a["stimulus_id"]) != list(b["stimulus_id"]):
        raise ValueError("paired arms must list the same stimuli in the same order")
    w = boot_weights(ctx, a["identity"].to_list())
    one = np.ones((1, a.height))
    k = len(ctx.emotions)
    ta, pa = M.label_codes(a, ctx.emotions)
    tb, pb = M.label_codes(b, ctx.emotions)
    est = {"kappa": (M.w_kappa(ta, pa, k, one)[0], M.w_kappa(tb, pb, k, one)[0],
                     M.w_kappa(tb, pb, k, w) - M.w_kappa(ta, pa, k, w))}
    for f in M.FIELDS:
        h = a[f"{f}_mean"].to_numpy().astype(float)
        xa, xb = a[f].to_numpy().astype(float), b[f].to_numpy().astype(float)
        ok = np.isfinite(xa) & np.isfinite(xb)
        ha, wa, onea = h[ok], w[:, ok], one[:, ok]
        for name, fn in (("r", lambda x, ww: M.w_pearson(x, ha, ww)),  # noqa: B023
                         ("mae", lambda x, ww: M.w_mae(x, ha, ww)),  # noqa: B023
                         ("sd", lambda x, ww: M.w_sd(x, ww))):
            est[f"{f}_{name}"] = (fn(xa[ok], onea)[0], fn(xb[ok], onea)[0],
                                  fn(xb[ok], wa) - fn(xa[ok], wa))
        for g in M.GROUPINGS:
            keep = pair_keep(a, b, f, g)
            pa_, sa = grouped(a, xa, g, w, keep)
            pb_, sb = grouped(b, xb, g, w, keep)
            est[f"{f}_{M.GROUPING_COLUMN[g]}"] = (pa_, pb_, sb - sa)
    rows = []
    for key, (va, vb, samples) in est.items():
        d = float(vb - va)
        lo, hi = M.percentile_ci(samples, ctx.a.alpha, d)
        rows.append({"model_id": model, "metric": key, label_a: float(va), label_b: float(vb),
                     "difference": d, "diff_low": lo, "diff_high": hi,
                     "p": bc_pvalue(samples, d)})
    return rows


# --- signal vs noise in a "collapse" verdict (A2, A3, A4, A6; docs/analysis-plan.md) ---------

SIGNAL_FIELD = "arousal"


def correct_in_all(frames: Sequence[pl.DataFrame]) -> np.ndarray:
    """The images every frame (arm or condition) labels correctly: the ``correct`` grouping of a
    comparison of several arms uses the same images in all of them."""
    return np.logical_and.reduce([_correct(f) for f in frames])


def signal_paired_rows(ctx: AnalysisContext, model: str, a: pl.DataFrame, b: pl.DataFrame,
                       label_a: str, label_b: str, field: str = SIGNAL_FIELD) -> list[dict]:
    """b - a of the pooled within-category Pearson r and slope of the model's rating on the
    human mean rating, per grouping, over the images both arms rated (``correct``: labelled
    correctly in both), with identity-bootstrap BC CIs and p (the images are paired; the same
    resampled identities as :func:`paired_rows`)."""
    w = boot_weights(ctx, a["identity"].to_list())
    one = np.ones((1, a.height))
    xa, xb = a[field].to_numpy().astype(float), b[field].to_numpy().astype(float)
    rows = []
    for g in M.GROUPINGS:
        keep = pair_keep(a, b, field, g)
        (ra1, sa1), (rb1, sb1) = (M.w_grouped_signal(d, x, field, g, one, keep)
                                  for d, x in ((a, xa), (b, xb)))
        (ra, sa), (rb, sb) = (M.w_grouped_signal(d, x, field, g, w, keep)
                              for d, x in ((a, xa), (b, xb)))
        row = {"model_id": model, "field": field, "grouping": g, "n_images": int(keep.sum())}
        for key, pa_, pb_, samples in (("r", ra1[0], rb1[0], rb - ra),
                                       ("slope", sa1[0], sb1[0], sb - sa)):
            d = float(pb_ - pa_)
            lo, hi = M.percentile_ci(samples, ctx.a.alpha, d)
            row.update({f"{key}_{label_a}": float(pa_), f"{key}_{label_b}": float(pb_),
                        f"{key}_difference": d, f"{key}_diff_low": lo, f"{key}_diff_high": hi,
                        f"{key}_p": bc_pvalue(samples, d)})
        row["p"] = row["r_p"]
        rows.append(row)
    return rows


def signal_verdicts(rows: list[dict], alpha: float, estimate: str = "r_difference"
                    ) -> dict[str, str]:
    """Holm over the family (the rows of one grouping: models or contrasts) on ``p``; each row
    gets ``p_holm`` and ``outcome`` (supports: within-category agreement rises); returns
    {grouping: combined outcome}."""
    overall = {}
    for g in M.GROUPINGS:
        fam = [r for r in rows if r["grouping"] == g]
        if not fam:
            continue
        add_holm(fam)
        for r in fam:
            r["outcome"] = p_outcome(r["p_holm"], r[estimate], alpha)
        overall[g] = combine([r["outcome"] for r in fam])
    return overall


SPREAD = {SUPPORTS: "spread rises", NOT_SUPPORTED: "spread falls",
          CANNOT_TELL: "no detectable change in spread",
          DEFINITION_SENSITIVE: "the spread rule is definition-sensitive"}
AGREEMENT = {SUPPORTS: "within-category agreement with humans rises",
             NOT_SUPPORTED: "within-category agreement with humans falls",
             CANNOT_TELL: "within-category agreement with humans does not change detectably",
             DEFINITION_SENSITIVE: "the agreement rule is definition-sensitive"}


# what the two rules say together, beyond "the rules disagree" (a change of spread: A2, A3, A4)
CHANGE_NOTES = {(SUPPORTS, SUPPORTS): ": the added spread carries signal",
                (SUPPORTS, CANNOT_TELL): ": the added variance is noise (the rules disagree)",
                (SUPPORTS, NOT_SUPPORTED): ": the added variance is noise that dilutes the signal "
                                           "(the rules disagree)"}
# A6: the models against one human rater
RATER_SPREAD = {SUPPORTS: "every model's spread is narrower than one human rater's",
                NOT_SUPPORTED: "some model's spread is wider than one human rater's",
                CANNOT_TELL: "the spread is not clearly narrower than one human rater's for "
                             "every model",
                DEFINITION_SENSITIVE: "the spread rule is definition-sensitive"}
RATER_SIGNAL = {SUPPORTS: "every model's signal (within-category slope on the human means) is "
                          "smaller than one human rater's",
                NOT_SUPPORTED: "some model's signal is larger than one human rater's",
                CANNOT_TELL: "the signal is not clearly smaller than one human rater's for every "
                             "model",
                DEFINITION_SENSITIVE: "the signal rule is definition-sensitive"}
RATER_NOTES = {(NOT_SUPPORTED, SUPPORTS): ": the extra spread is noise around a collapsed signal "
                                          "(the rules disagree)",
               (CANNOT_TELL, SUPPORTS): ": noise fills the spread of a collapsed signal (the "
                                        "rules disagree)"}


def signal_reading(sd_outcome: str, signal_outcome: str, spread: dict | None = None,
                   agreement: dict | None = None, notes: dict | None = None) -> str:
    """How the plan's SD rule and the signal rule read together (docs/analysis-plan.md)."""
    spread, agreement = spread or SPREAD, agreement or AGREEMENT
    notes = CHANGE_NOTES if notes is None else notes
    rule = "" if sd_outcome == DEFINITION_SENSITIVE else f" (plan's rule: {word(sd_outcome)})"
    head = f"{spread[sd_outcome]}{rule}; {agreement[signal_outcome]}"
    if (sd_outcome, signal_outcome) in notes:
        return head + notes[(sd_outcome, signal_outcome)]
    if sd_outcome == signal_outcome or DEFINITION_SENSITIVE in (sd_outcome, signal_outcome):
        return head
    return head + " (the rules disagree)"


def both_rules(sd_outcome: str, signal_outcome: str) -> str:
    """The outcome of the SD rule and the signal rule together: the common one, else
    cannot_tell (as for several units, :func:`combine`)."""
    return combine([sd_outcome, signal_outcome])


def reading_line(overall: dict[str, str], signal_overall: dict[str, str], **vocab
                 ) -> tuple[str, str, str, str]:
    """(signal outcome, reading, both rules, the sentence for the verdict) of an ablation: the
    reading of the combined outcomes, plus that of the primary grouping when either rule is
    definition-sensitive; ``vocab``: the phrases of :func:`signal_reading`."""
    sd_outcome, signal_outcome = across_definitions(overall), across_definitions(signal_overall)
    reading = signal_reading(sd_outcome, signal_outcome, **vocab)
    if DEFINITION_SENSITIVE in (sd_outcome, signal_outcome):
        reading += ("; intended-emotion grouping: "
                    + signal_reading(overall["intended"], signal_overall["intended"], **vocab))
    both = both_rules(sd_outcome, signal_outcome)
    line = (". Signal" + definitions_line(signal_overall).removeprefix(";")
            + f". Reading: {reading}; both rules: {word(both)}")
    return signal_outcome, reading, both, line
