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
from emoface.analysis.stats import TIE_TOLERANCE, bc_pvalue, holm

if TYPE_CHECKING:
    from emoface.analysis.context import AnalysisContext

EPS = TIE_TOLERANCE  # a CI bound within floating-point noise of 0 counts as 0 (1e-9)
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


# How many resamples a family needs (docs/analysis-plan.md, "Resampling resolution"): the
# smallest p a resampling test can give, Holm-adjusted over the family, must be at most
# alpha / RESOLUTION_MARGIN, so that a Holm-adjusted p below alpha is reachable with room to spare.
RESOLUTION_MARGIN = 4


def resamples_for_family(requested: int, family_size: int, alpha: float, *,
                         floor_count: int = 2) -> int:
    """Resamples (bootstrap B or permutations N) for a family of ``family_size`` tests: at least
    ``requested``, and enough that the smallest reachable p, ``floor_count`` / (B + 1), times the
    family size is <= alpha / RESOLUTION_MARGIN.

    ``floor_count`` = 2 for a two-sided bootstrap p (each tail is floored at 1 / (B + 1),
    :func:`emoface.analysis.stats.bc_interval`), 1 for a Monte Carlo permutation p,
    (b + 1) / (N + 1). Holm multiplies the smallest p by the family size, so with B too small no
    member can ever be significant (13 models at B = 500: 13 x 2 / 501 = 0.052 > 0.05)."""
    import math

    # (rounded first: 4 * 2 * 2 / 0.05 is 320.00000000000006 in floating point)
    need = math.ceil(round(RESOLUTION_MARGIN * max(1, family_size) * floor_count / alpha, 9)) - 1
    return max(int(requested), need)


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


def boot_weights(ctx, identities, n_boot: int | None = None,
                 family_size: int | None = None) -> np.ndarray:
    """Identity-cluster bootstrap weights with the analysis seed: ``n_boot`` (default
    analysis.bootstrap) resamples, raised by :func:`resamples_for_family` for a family of
    ``family_size`` tests (default: the study models)."""
    b = resamples_for_family(n_boot or ctx.a.bootstrap, family_size or len(ctx.models),
                             ctx.a.alpha)
    return M.cluster_weights(identities, b, ctx.a.seed)


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
