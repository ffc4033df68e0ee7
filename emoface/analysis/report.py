"""Writing results to ``data/results/<ID>/`` and the report ``data/results/report.md``.

Per ablation: ``tables/*.csv`` (``main.csv`` first), ``metrics.json`` (DVC metrics, with the
verdict), ``plots/*.csv`` (DVC plots) and ``figures/*.png``. Every file that holds numbers from
simulated data carries ``"simulated": true``, a SIMULATED banner or title.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from emoface import __version__
from emoface.ablations import EXECUTION_ORDER, REGISTRY
from emoface.analysis.ablations import AblationResult
from emoface.analysis.figures import figures_for
from emoface.io import atomic_path, sha256_file, write_csv
from emoface.parsing import PARSER_VERSION
from emoface.prompts import PROMPT_VERSION

BANNER = ("> **SIMULATED DATA.** These numbers come from the simulated rater "
          "(`emoface.backends.simulated`) and synthetic faces and norms. They describe the "
          "simulator, not a real vision-language model or real people.")


# the analysis plan, relative to data/results/report.md
PLAN = "../../docs/analysis-plan.md"


def _outcome_words(outcome: str) -> str:
    if outcome == "definition_sensitive":
        return ("definition-sensitive (the within-category groupings disagree; see the verdict "
                "line and the plan's sensitivity analyses)")
    return outcome.replace("_", " ")


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


def _markdown(table: pl.DataFrame, max_rows: int = 12) -> str:
    pdf = table.head(max_rows).to_pandas()
    return pdf.to_markdown(index=False, floatfmt=".3f")


def _provenance(metrics: Sequence[dict], data_files: Sequence[Path]) -> str:
    models: dict[str, dict] = {}
    for m in metrics:
        for row in m.get("provenance", {}).get("models", []):
            models[row["model_id"]] = row
    lines = ["## Provenance", "",
             f"- code: emoface {__version__}; parser {PARSER_VERSION}; prompts "
             + ", ".join(f"{k} = {v}" for k, v in PROMPT_VERSION.items()),
             *_code_provenance(), "- models:"]
    for m in models.values():
        lines.append(f"  - `{m['model_id']}` ({m['backend']}, {m['backend_version']}, "
                     f"quantization {m['quantization']}, digest `{m['model_digest'][:23]}...`"
                     f"{', simulated' if m['simulated'] else ''})")
    lines.append("- data (sha256):")
    for f in data_files:
        if f.exists():
            lines.append(f"  - `{f.as_posix()}`: `{sha256_file(f)[:16]}...`")
    return "\n".join(lines)


def _code_provenance() -> list[str]:
    """The code that wrote the report (git commit, uncommitted changes) and the resolved versions
    of the numerical packages; every prediction row carries its own commit too."""
    from emoface.provenance import code_label, numerical_versions

    versions = ", ".join(f"{k} {v}" for k, v in numerical_versions().items())
    return [f"- report written by: {code_label()}", f"- numerical packages: {versions}"]


def _read(root: Path, aid: str) -> tuple[dict, pl.DataFrame]:
    folder = root / aid
    metrics = json.loads((folder / "metrics.json").read_text())
    return metrics, pl.read_csv(folder / "tables" / "main.csv")


def write_report(root: Path, ablation_ids: Sequence[str], data_files: Sequence[Path]) -> Path:
    """The report from the written results, in the plan's execution order, each section tied to
    its paper section; the baseline first."""
    found = {aid: _read(root, aid) for aid in ["baseline", *ablation_ids]
             if (root / aid / "metrics.json").exists()}
    simulated = any(m["simulated"] for m, _ in found.values())
    parts = ["# VLM emotion-rating ablations: results", ""]
    if simulated:
        parts += [BANNER, ""]
    parts += ["Each section states the plan's hypothesis and interpretation rule, the measured "
              "effect with its confidence interval, and which interpretation the data support.", ""]
    if "baseline" in found:
        m, main = found["baseline"]
        cols = [c for c in ["model_id", "accuracy", "kappa", "kappa_low", "kappa_high",
                            "valence_r", "arousal_r", "valence_mae", "arousal_mae",
                            "valence_within_category_sd", "arousal_within_category_sd",
                            "arousal_human_rater_within_category_sd",
                            "arousal_human_within_category_sd", "arousal_within_correct_sd",
                            "arousal_within_label_sd", "kappa7"]
                if c in main.columns]
        parts += ["## Baseline (context-carry, T = 0)", "",
                  f"Definitions: [analysis plan, baseline]({PLAN}#baseline).", "",
                  m["verdict"], "",
                  _markdown(main.select(cols)), "",
                  *[f"![](baseline/figures/{f})" for f in m["figures"]], ""]
    for aid in EXECUTION_ORDER:
        if aid not in found:
            continue
        (m, main), a = found[aid], REGISTRY[aid]
        parts += [f"## {aid}: {a.name} — paper: {a.paper_section}", "",
                  f"- **Hypothesis:** {a.hypothesis}",
                  f"- **Interpretation rule:** {a.interpretation}",
                  f"- **Decision rule, family and sensitivity analyses:** "
                  f"[analysis plan, {aid}]({PLAN}#{aid.lower()})"
                  + (f" (multiplicity family: {m['family']}, Holm)" if m.get("family") else ""),
                  f"- **Outcome:** {_outcome_words(m['outcome'])}"
                  + (f" (plan's SD rule); signal: {_outcome_words(m['signal']['outcome'])}; both "
                     f"rules: {_outcome_words(m['signal']['both_rules'])}"
                     if isinstance(m.get("signal"), dict) and "both_rules" in m["signal"]
                     else ""), "", m["verdict"], "",
                  _markdown(main), "", *[f"![]({aid}/figures/{f})" for f in m["figures"]], ""]
    missing = [a for a in ablation_ids if a not in found]
    if missing:
        parts += ["## Not run", "", "No results for: " + ", ".join(missing), ""]
    parts += [_provenance([m for m, _ in found.values()], data_files), ""]
    path = root / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))
    return path
