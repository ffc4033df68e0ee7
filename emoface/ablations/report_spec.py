"""What an ablation declares about its place in the report (``Ablation.report``).

* ``question``: the one line the report's summary table asks;
* ``decisions(tables, metrics, alpha)``: per unit (model, contrast, layer) the estimate its
  decision rule reads, with its CI, the adjusted p(s) and the unit's outcome, read from what the
  analysis wrote (``tables(name)`` returns ``tables/<name>.csv``; ``metrics`` is metrics.json), so
  the report can be rewritten without rerunning the analysis;
* ``disagree``: what its units are called when they can reach opposite outcomes ("models";
  None when the ablation's own rule already counts its units, as A6's does);
* ``views``: the tables its section shows, with the columns a reader needs (every column stays
  in the CSVs).

Light on purpose (dataclasses only; polars is imported inside the helpers), so module bodies and
the registry stay fast to import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

CANNOT_TELL = "cannot_tell"


@dataclass(frozen=True)
class Estimate:
    label: str  # "" for the only one, "(a)"/"(b)" when there are several
    value: float
    low: float | None = None
    high: float | None = None


@dataclass
class Decision:
    """One unit's decision: its estimate(s) with CI, adjusted p(s) and outcome."""

    unit: str
    estimand: str
    estimates: list[Estimate]
    ps: list[tuple[str, float]] = field(default_factory=list)  # (label, adjusted p); [] = CI rule
    outcome: str = CANNOT_TELL
    percent: bool = False  # estimates are shares, printed in %


@dataclass(frozen=True)
class Col:
    """One column of a report table: a value (with its CI when ``low``/``high`` are given)."""

    header: str
    col: str
    low: str | None = None
    high: str | None = None
    kind: str = "auto"  # auto | p | pct | int | text | outcome


@dataclass(frozen=True)
class View:
    """Which table a section shows, which rows (``where``: column == value) and which columns
    (none: every column)."""

    table: str
    cols: tuple[Col, ...] = ()
    title: str = ""
    where: tuple[tuple[str, object], ...] = ()


Tables = Callable[[str], "pl.DataFrame"]
DecisionsFn = Callable[[Tables, dict, float], list[Decision]]


@dataclass(frozen=True)
class ReportSpec:
    question: str
    decisions: DecisionsFn | None = None
    disagree: str | None = "models"
    views: tuple[View, ...] = ()


def ci(header: str, col: str, low: str, high: str, kind: str = "auto") -> Col:
    return Col(header, col, low, high, kind)


MODEL = Col("model", "model_id", kind="text")
FIELD = Col("field", "field", kind="text")
GROUPING = Col("grouping", "grouping", kind="text")
OUTCOME = Col("outcome", "outcome", kind="outcome")


def rows(df: pl.DataFrame, **where) -> list[dict]:
    """The rows of ``df`` where every column equals its value."""
    import polars as pl

    for k, v in where.items():
        df = df.filter(pl.col(k) == v)
    return df.to_dicts()


def num(x) -> float:
    return float("nan") if x is None else float(x)


def paired_decisions(table: str, estimand: str, value: str, low: str, high: str,
                     percent: bool = False, **where) -> DecisionsFn:
    """Decisions of a table with one row per unit: ``model_id``, the estimate and its CI,
    ``p_holm`` and ``outcome`` (A2, A3, A4, A7)."""
    def decisions(tables: Tables, metrics: dict, alpha: float) -> list[Decision]:
        return [Decision(r["model_id"], estimand, [Estimate("", r[value], r[low], r[high])],
                         [("", num(r["p_holm"]))], r["outcome"] or CANNOT_TELL, percent)
                for r in rows(tables(table), **where)]
    return decisions
