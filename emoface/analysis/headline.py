"""One small headline per ablation: ``data/results/<ID>/headline.json``, the DVC metrics.

The full ``metrics.json`` (hundreds of keys) stays an ordinary output; the headline has the same
five flat keys for every ablation, so ``dvc metrics show`` is one short row per ablation and
``dvc exp show`` / ``dvc metrics diff`` compare experiments at a glance:

    outcome   the ablation's verdict (supports | does_not_support | cannot_tell | ...)
    estimate  its primary estimate, from the row below
    ci_low, ci_high   that estimate's 95 % CI (null where the ablation reports none)
    p_adj     its multiplicity-adjusted p (Holm within the ablation's family; A9: the
              permutation max-statistic FWE p; null where the ablation tests nothing)

The row is the first of the family in table order (the first study model, the primary
grouping), so it is fixed before the data are seen; each ablation names its table and columns
(``Ablation.headline``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl

from emoface.ablations.base import Headline
from emoface.io import atomic_path
from emoface.paths import HEADLINE_FILE as FILE


def spec_for(ablation_id: str) -> Headline | None:
    """The ablation's own ``headline`` (emoface/ablations/aNN_*.py, the baseline's included);
    None for an id the registry does not know."""
    from emoface.ablations import get

    try:
        return get(ablation_id).headline
    except ValueError:
        return None


def _num(row: dict, col: str | None) -> float | None:
    if col is None or row.get(col) is None:
        return None
    v = float(row[col])
    return float(f"{v:.4g}") if math.isfinite(v) else None  # 4 significant digits


def headline(ablation_id: str, outcome: str, tables: dict[str, pl.DataFrame]) -> dict:
    """The five headline keys of one result (every key present; unknown values are null)."""
    out = {"outcome": outcome, "estimate": None, "ci_low": None, "ci_high": None, "p_adj": None}
    spec = spec_for(ablation_id)
    table = tables.get(spec.table) if spec else None
    if spec is None or table is None or table.height == 0 or spec.estimate not in table.columns:
        return out
    rows = table.to_dicts()
    if spec.pick == "max":
        rows = sorted((r for r in rows if _num(r, spec.estimate) is not None),
                      key=lambda r: -_num(r, spec.estimate)) or rows
    elif spec.p_adj and spec.p_adj in table.columns:
        rows = [r for r in rows if _num(r, spec.p_adj) is not None] or rows
    row = rows[0]
    out.update(estimate=_num(row, spec.estimate), ci_low=_num(row, spec.ci_low),
               ci_high=_num(row, spec.ci_high), p_adj=_num(row, spec.p_adj))
    return out


def write_headline(ablation_id: str, outcome: str, tables: dict[str, pl.DataFrame],
                   folder: Path) -> Path:
    from schemas.analysis import validate_headline

    path = folder / FILE
    record = validate_headline(headline(ablation_id, outcome, tables), file=path)
    with atomic_path(path) as tmp:  # keys in the documented order, not sorted
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return path
