"""What every ablation analysis shares: the result record, decision rules and small helpers.

Decision rules (docs/analysis-plan.md): a verdict test gives an estimate, its bootstrap CI and a
p-value that inverts the same (bias-corrected) interval; the p-values of one ablation's family
(the models, contrasts or layers that enter its verdict) are Holm-adjusted, and a direction is
declared only when the adjusted p is below alpha.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from emoface.analysis import metrics as M
from emoface.analysis.stats import holm

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
