"""The report's summary: per ablation and unit (model, contrast, layer), the estimate that decides
its verdict, with its CI, the adjusted p and the outcome; and the ablation's outcome in words.

Read from what :func:`emoface.analysis.report.write_result` wrote (``tables/*.csv`` and
``metrics.json``), so the report can be rewritten without rerunning an analysis. Each ablation
declares which rows and columns hold its decision (``Ablation.report``,
:mod:`emoface.ablations.report_spec`); the decision rules stay in the ablation modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from emoface.ablations import get
from emoface.ablations.report_spec import Decision
from emoface.analysis.common import CANNOT_TELL, DEFINITION_SENSITIVE, NOT_SUPPORTED, SUPPORTS


@dataclass
class Summary:
    """An ablation's decisions and its outcome in words."""

    ablation_id: str
    question: str
    decisions: list[Decision]
    outcome: str  # words, e.g. "supports", "models disagree (1 supports, 1 does not support)"
    note: str = ""  # e.g. why no per-unit summary could be read


_WORDS = {SUPPORTS: "supports", NOT_SUPPORTED: "does not support", CANNOT_TELL: "cannot tell",
          DEFINITION_SENSITIVE: "definition-sensitive (the within-category groupings disagree)",
          "not_applicable": "not applicable"}


def words(outcome: str) -> str:
    """An outcome code in words."""
    return _WORDS.get(outcome, outcome.replace("_", " "))


def overall_words(outcome: str, units: list[str], noun: str | None) -> str:
    """The ablation's outcome in words. When its units reach different decisive outcomes (one
    supports, another does not) it says "<noun> disagree"; when some units decide and others
    cannot tell, the combined "cannot tell" says how they split."""
    if outcome == DEFINITION_SENSITIVE or noun is None or len(set(units)) < 2:
        return words(outcome)
    counts = ", ".join(f"{units.count(u)} {words(u)}" for u in dict.fromkeys(units))
    if {SUPPORTS, NOT_SUPPORTED} <= set(units):
        return f"{noun} disagree ({counts})"
    if outcome == CANNOT_TELL:
        return f"cannot tell: {noun} differ ({counts})"
    return words(outcome)


def summarise(folder: Path, alpha: float) -> Summary:
    """The summary of the ablation whose results are in ``folder`` (``<root>/<ID>``)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    aid = metrics["ablation"]
    ablation = get(aid)
    spec = ablation.report
    question = spec.question if spec else ablation.hypothesis
    extractor, noun = (spec.decisions, spec.disagree) if spec else (None, None)
    cache: dict[str, pl.DataFrame] = {}

    def tables(name: str) -> pl.DataFrame:
        if name not in cache:
            try:
                cache[name] = pl.read_csv(folder / "tables" / f"{name}.csv",
                                          infer_schema_length=None)
            except pl.exceptions.NoDataError:  # an empty table: no rows, no columns
                cache[name] = pl.DataFrame()
        return cache[name]

    if extractor is None:
        return Summary(aid, question, [], words(metrics["outcome"]),
                       f"{aid} declares no decision rows (Ablation.report); see its section")
    try:
        decisions = extractor(tables, metrics, alpha)
    except (OSError, KeyError, pl.exceptions.PolarsError) as err:
        return Summary(aid, question, [], words(metrics["outcome"]),
                       f"summary rows could not be read ({type(err).__name__}: {err}); "
                       "see its section")
    return Summary(aid, question, decisions,
                   overall_words(metrics["outcome"], [d.outcome for d in decisions], noun))


def finite(x) -> bool:
    return x is not None and bool(np.isfinite(x))
