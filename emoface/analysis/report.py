"""Writing results to ``data/results/<ID>/`` and the report ``data/results/report.md`` with
``report.html`` beside it.

Per ablation: ``tables/*.csv`` (``main.csv`` first), ``metrics.json`` (DVC metrics, with the
verdict), ``plots/*.csv`` (DVC plots) and ``figures/*.png`` with an ``.svg`` beside each. Every
file that holds numbers from simulated data carries ``"simulated": true``, a SIMULATED banner or
title.

The report opens with one summary table (:mod:`emoface.analysis.summary`: per ablation and unit
the decision estimate, its CI, the adjusted p and the outcome); sections follow in the plan's
numbering after the baseline, each with the columns a reader needs (``Ablation.report.views``), every row or
"first N of M rows" and the path of the full table. report.html is the same document in one file
(figures embedded, tables sortable by a click on a header; no network).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from emoface import __version__
from emoface.ablations import baseline_ablation, get, known_ids, with_baseline
from emoface.ablations.report_spec import Col, View
from emoface.analysis.common import AblationResult
from emoface.analysis.document import (
    DASH,
    Block,
    Bullets,
    Cell,
    Document,
    Figure,
    Heading,
    Para,
    Table,
    fmt_ci,
    fmt_num,
    fmt_p,
    paper_numbers,
    rows_note,
    to_html,
    to_markdown,
)
from emoface.analysis.figures import figures_for
from emoface.analysis.power import power_words
from emoface.analysis.summary import Summary, finite, summarise, words
from emoface.io import atomic_path, sha256_file, write_csv
from emoface.parsing import PARSER_VERSION
from emoface.prompts import PROMPT_VERSION

BANNER = ("> **SIMULATED DATA.** These numbers come from the simulated rater "
          "(`emoface.backends.simulated`) and synthetic faces and norms. They describe the "
          "simulator, not a real vision-language model or real people.")


# the analysis plan, relative to data/results/report.md
PLAN = "../../docs/analysis-plan.md"
CALIBRATION = "../../docs/verdict-calibration.md"


def _json_safe(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item"):
        return _json_safe(obj.item())
    return obj


def write_json(data: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(data), indent=1, sort_keys=True) + "\n")


def with_simulated(table: pl.DataFrame, simulated: bool) -> pl.DataFrame:
    """``table`` with a ``simulated`` column (every CSV of results carries one): kept when the
    table has it; else per row from a backend model id (``simulated/...``) in ``model_id``; else
    the result's flag (True when any number in it comes from the simulated backend)."""
    if "simulated" in table.columns:
        return table
    if "model_id" in table.columns and table["model_id"].dtype == pl.String:
        mid = pl.col("model_id")
        return table.with_columns(
            pl.when(mid.str.contains("/")).then(mid.str.starts_with("simulated/"))
            .otherwise(pl.lit(simulated)).fill_null(simulated).alias("simulated"))
    return table.with_columns(pl.lit(simulated).alias("simulated"))


def write_result(result: AblationResult, root: Path) -> Path:
    """Write one ablation's results under ``root/<ID>/``; returns the folder. Every table and
    plot CSV has a ``simulated`` column (:func:`with_simulated`)."""
    folder = root / result.ablation_id
    for name, table in result.tables.items():
        flat = table.select([c for c in table.columns if table[c].dtype != pl.Object])
        write_csv(with_simulated(flat, result.simulated), folder / "tables" / f"{name}.csv")
    for name, table in result.plots.items():
        write_csv(with_simulated(table, result.simulated), folder / "plots" / f"{name}.csv")
    figures = figures_for(result, folder / "figures")
    write_json({"ablation": result.ablation_id, "outcome": result.outcome,
                "simulated": result.simulated, "verdict": result.verdict,
                "figures": [f.name for f in figures], "provenance": result.provenance,
                **result.metrics}, folder / "metrics.json")
    return folder


def _provenance(metrics: Sequence[dict], data_files: Sequence[Path]) -> list[Block]:
    from emoface.provenance import code_label, numerical_versions

    models: dict[str, dict] = {}
    for m in metrics:
        for row in m.get("provenance", {}).get("models", []):
            models[row["model_id"]] = row
    versions = ", ".join(f"{k} {v}" for k, v in numerical_versions().items())
    blocks: list[Block] = [
        Heading(2, "Provenance", "provenance"),
        Bullets([f"code: emoface {__version__}; parser {PARSER_VERSION}; prompts "
                 + ", ".join(f"{k} = {v}" for k, v in PROMPT_VERSION.items()),
                 f"report written by: {code_label()}", f"numerical packages: {versions}"])]
    if models:
        blocks.append(Table(
            ["model", "backend", "backend version", "quantization", "digest", "simulated"],
            [[Cell(f"`{m['model_id']}`"), Cell(m["backend"]), Cell(str(m["backend_version"])),
              Cell(str(m["quantization"])), Cell(f"`{str(m['model_digest'])[:23]}...`"),
              Cell("yes" if m["simulated"] else "no")] for m in models.values()]))
    files = [f for f in data_files if f.exists()]
    if files:
        blocks.append(Table(["data file", "sha256"],
                            [[Cell(f"`{f.as_posix()}`"), Cell(f"`{sha256_file(f)[:16]}...`")]
                             for f in files]))
    return blocks


# --- the report's tables: only the columns a reader needs (every column stays in the CSVs) ---

MAX_ROWS = 40  # longer tables show their first rows and say where the full table is


def _signal_words(m: dict) -> str:
    """Where an ablation has a signal rule beside the plan's SD rule (A2, A3, A4, A6): both."""
    sig = m.get("signal")
    if not (isinstance(sig, dict) and "both_rules" in sig):
        return ""
    return (f" (plan's SD rule); signal: {words(sig['outcome'])}; both rules: "
            f"{words(sig['both_rules'])}")


def _views(aid: str) -> tuple[View, ...]:
    try:
        spec = get(aid).report
    except ValueError:  # results of an id the registry no longer knows: every column
        spec = None
    return (spec.views if spec and spec.views else ()) or (View("main"),)


_P_COLUMN = re.compile(r"(^|_)p(_|$)")


def _kind(col: Col, dtype: pl.DataType) -> str:
    if col.kind != "auto":
        return col.kind
    if _P_COLUMN.search(col.col):
        return "p"
    if dtype.is_integer():
        return "int"
    if dtype == pl.Boolean:
        return "bool"
    return "num" if dtype.is_numeric() else "text"


def _value(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def format_cell(col: Col, row: dict, dtype: pl.DataType) -> Cell:
    """One cell as a paper prints it, with the number the HTML table sorts it by."""
    kind = _kind(col, dtype)
    v = _value(row.get(col.col))
    if kind == "p":
        return Cell(fmt_p(v), v)
    if kind == "outcome":
        return Cell(words(v) if v else DASH)
    if kind == "text":
        return Cell(DASH if v is None else str(v))
    if kind == "bool":
        return Cell(DASH if v is None else ("yes" if v else "no"))
    if kind == "int" or (kind == "num" and v is not None and float(v).is_integer()
                         and (col.col == "n" or col.col.startswith("n_"))):
        return Cell(DASH if v is None else str(int(v)), v)
    if col.low or col.high:
        lo, hi = _value(row.get(col.low)), _value(row.get(col.high))
        if kind == "pct":
            return Cell(fmt_ci(v, lo, hi, 1, 100, " %"), v)
        return Cell(fmt_ci(v, lo, hi), v)
    if kind == "pct":
        return Cell(fmt_ci(v, None, None, 1, 100, " %"), v)
    return Cell(fmt_num(v), v)


def view_table(df: pl.DataFrame, view: View, path: str) -> Table | None:
    """The rows and columns ``view`` asks for; columns the table lacks are left out, a table
    longer than :data:`MAX_ROWS` says so and where the full one is."""
    for k, v in view.where:
        if k in df.columns:
            df = df.filter(pl.col(k) == v)
    cols = [c for c in view.cols if c.col in df.columns]
    if not cols:
        return None
    shown = df.head(MAX_ROWS)
    rows = [[format_cell(c, r, df.schema[c.col]) for c in cols]
            for r in shown.iter_rows(named=True)]
    return Table([c.header for c in cols], rows, rows_note(shown.height, df.height, path))


# --- the report -----------------------------------------------------------------------------

def _read(root: Path, aid: str) -> dict:
    return json.loads((root / aid / "metrics.json").read_text())


def _figures(root: Path, aid: str, m: dict) -> list[Block]:
    out: list[Block] = []
    for name in m.get("figures", []):
        png = root / aid / "figures" / name
        if not png.exists():
            continue
        svg = png.with_suffix(".svg")
        out.append(Figure(png, f"{aid}/figures/{name}",
                          f"{aid}/figures/{svg.name}" if svg.exists() else None,
                          f"{aid}: {png.stem.replace('_', ' ')}"))
    return out


def _tables(root: Path, aid: str) -> list[Block]:
    """The section's tables (``Ablation.report.views``; all of main.csv when none is declared) and
    where every table is in full."""
    folder = root / aid / "tables"
    views = _views(aid)
    out: list[Block] = []
    for v in views:
        path = folder / f"{v.table}.csv"
        if not path.exists():
            continue
        try:
            df = pl.read_csv(path, infer_schema_length=None)
        except pl.exceptions.NoDataError:  # an empty table (an ablation with nothing to test)
            continue
        if not v.cols:  # no view defined: every column
            v = View(v.table, tuple(Col(c, c) for c in df.columns), v.title)
        t = view_table(df, v, f"{aid}/tables/{v.table}.csv")
        if t is None:
            continue
        if v.title:
            out.append(Para(f"**{v.title}** (`{aid}/tables/{v.table}.csv`)"))
        out.append(t)
    csvs = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if csvs:
        out.append(Para("Every column and row: " + ", ".join(
            f"`{aid}/tables/{p.name}`" for p in csvs) + "."))
    return out


def summary_table(summaries: Sequence[Summary], alpha: float) -> Table:
    """One row per ablation and unit: the question, the decision estimate with its CI, the
    adjusted p, the unit's outcome and the ablation's, a link to the section."""
    level = f"{100 * (1 - alpha):g} %"
    rows = []
    for s in summaries:
        link = f"[{s.ablation_id}](#{s.ablation_id.lower()})"
        question = s.question
        units = s.decisions or [None]
        for i, d in enumerate(units):
            first = i == 0
            if d is None:
                est, p, unit_out, unit = Cell(s.note or DASH), Cell(DASH), Cell(DASH), Cell(DASH)
            else:
                scale, digits, unit_sym = (100, 1, " %") if d.percent else (1, 3, "")
                est = Cell("; ".join(
                    (f"{e.label} " if e.label else "")
                    + fmt_ci(e.value, e.low, e.high, digits, scale, unit_sym)
                    for e in d.estimates), d.estimates[0].value if d.estimates else None)
                ps = [(lab, v) for lab, v in d.ps]
                p = Cell("; ".join((f"{lab} " if lab else "") + fmt_p(v) for lab, v in ps)
                         if ps else "CI rule (no p)",
                         min((v for _, v in ps if finite(v)), default=None))
                unit_out, unit = Cell(words(d.outcome)), Cell(d.unit)
            what = f"{question} *Estimate:* {d.estimand}." if d is not None else question
            rows.append([Cell(link), Cell(what if first else ""), unit, est, p, unit_out,
                         Cell(f"**{s.outcome}**" if first else "")])
    return Table(["ablation", "question", "model or unit", f"estimate [{level} CI]",
                  "p (Holm)", "outcome (unit)", "outcome (ablation)"], rows, css="summary")


def write_report(root: Path, ablation_ids: Sequence[str], data_files: Sequence[Path], *,
                 alpha: float = 0.05) -> Path:
    """report.md and report.html from the written results: a summary table first, then the
    baseline and the ablations in the plan's numbering (A1, A2, ...), each section tied to its
    paper section, then the provenance. ``alpha``: the analysis's (params ``analysis.alpha``)."""
    order = [a for a in known_ids() if a in ablation_ids]
    order += [a for a in ablation_ids if a not in order]
    found = {aid: _read(root, aid) for aid in with_baseline(order)
             if (root / aid / "metrics.json").exists()}
    summaries = {aid: summarise(root / aid, alpha) for aid in order
                 if aid in found and get(aid).decides}
    simulated = any(m["simulated"] for m in found.values())
    doc = Document("VLM emotion-rating ablations: results")
    if simulated:
        doc.add(Para(BANNER))
    doc.add(Heading(2, "Summary", "summary"),
            Para("Per ablation and unit (model, contrast or layer): the estimate its decision "
                 "rule reads, with its confidence interval; the p-value adjusted over the "
                 "ablation's family (Holm; for hidden states family-wise over layers by the "
                 "max-statistic permutation null; \"CI rule\": decided on the interval alone); "
                 "the outcome for the unit and for the ablation. When the units reach opposite "
                 "outcomes the ablation's outcome says they disagree. Definitions: "
                 f"[analysis plan]({PLAN})."),
            summary_table(list(summaries.values()), alpha))
    for aid in found:
        m, a = found[aid], get(aid)
        if not a.decides:
            doc.add(Heading(2, a.title, aid.lower()),
                    Bullets([f"**Definitions:** [analysis plan, {aid}]({PLAN}#{aid.lower()})",
                             *_data_line(m)]),
                    Para(paper_numbers(m["verdict"])), *_tables(root, aid), *_figures(root, aid, m))
            continue
        s = summaries[aid]
        doc.add(Heading(2, a.title, aid.lower()),
                Bullets([f"**Question:** {s.question}",
                         f"**Hypothesis:** {a.hypothesis}",
                         f"**Interpretation rule:** {a.interpretation}",
                         f"**Decision rule, family and sensitivity analyses:** "
                         f"[analysis plan, {aid}]({PLAN}#{aid.lower()})"
                         + (f" (multiplicity family: {m['family']}, {m.get('adjustment', 'Holm')})"
                            if m.get("family") else ""),
                         f"**Outcome:** {s.outcome}" + _signal_words(m),
                         *_power_line(aid, s.outcome, found.get(baseline_ablation().id)), *_data_line(m)]),
                Para(paper_numbers(m["verdict"])), *_tables(root, aid), *_figures(root, aid, m))
    missing = [a for a in ablation_ids if a not in found]
    if missing:
        doc.add(Heading(2, "Not run", "not-run"), Para("No results for: " + ", ".join(missing)))
    doc.add(*_provenance(list(found.values()), data_files))
    path = root / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text(to_markdown(doc))
    with atomic_path(root / "report.html") as tmp:
        tmp.write_text(to_html(doc))
    return path


def _power_line(aid: str, outcome: str, baseline: dict | None) -> list[str]:
    """For a "cannot tell": what the rule finds at about this design (identities = images rated
    by the baseline / 6), from the stored calibration table (not simulated here)."""
    if "cannot tell" not in outcome or not baseline:
        return []
    n = max((int(v.get("n") or 0) for v in baseline.get("models", {}).values()), default=0)
    line = power_words(aid, round(n / 6)) if n else ""
    return ([f"**Could it have told?** {line} ([verdict calibration]({CALIBRATION}))"]
            if line else [])


def _data_line(m: dict) -> list[str]:
    return (["**Data:** SIMULATED (the numbers describe the simulator, not a real model)"]
            if m.get("simulated") else [])
