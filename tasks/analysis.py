"""Prefect tasks for analyses and the report.

An analysis task is cached on the content of what it reads (the digests of the prediction and
hidden-state files of its work items, the analysis parameters, the code version) and of what it
wrote (its metrics.json): if the results folder was deleted, there is no cache key and it runs.
Its main table and verdict are published as Prefect artifacts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from emoface import __version__
from emoface.ablations import WorkItem, run_analysis
from emoface.analysis.context import AnalysisContext
from emoface.analysis.report import BANNER, write_report, write_result
from emoface.config import Params
from emoface.inference.store import HiddenStateStore, PredictionStore
from emoface.io import sha256_file
from emoface.paths import DataPaths
from tasks.record import HOOKS


def _input_files(items: Sequence[WorkItem], data: DataPaths) -> list[Path]:
    files: list[Path] = []
    for it in items:
        if it.kind == "hidden":
            folder = HiddenStateStore(data.root).model_dir(it.stimulus_set, it.model_id)
            files += sorted(folder.glob("layer_*.npz"))
        else:
            folder = PredictionStore(data.root).condition_dir(
                it.stimulus_set, it.condition.condition_id, it.model_id)
            files += sorted(folder.glob("b*.parquet")) + sorted(folder.glob("b*.npz"))
    return files


class AnalysisInputsPolicy(CachePolicy):
    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        data = DataPaths(Path(inputs["data_root"]))
        out = data.root / "results" / inputs["ablation_id"] / "metrics.json"
        if not out.exists():
            return None
        h = hashlib.sha256()
        params: Params = inputs["params"]
        h.update(f"{inputs['ablation_id']}|{__version__}|{inputs['models']}|".encode())
        h.update(params.model_dump_json(include={"study", "analysis", "ablations",
                                                 "stimuli"}).encode())
        for f in _input_files(inputs["items"], data):
            h.update(f.name.encode() + sha256_file(f).encode())
        h.update(sha256_file(out).encode())
        return f"analysis-{inputs['ablation_id']}-{h.hexdigest()[:40]}"


@task(name="analysis", task_run_name="analysis {ablation_id}", cache_policy=AnalysisInputsPolicy(),
      persist_result=True, result_serializer="json", **HOOKS)
def analysis_task(ablation_id: str, params: Params, data_root: str, models: list[str],
                  items: list[WorkItem]) -> dict:
    """Run one analysis, write data/results/<ID>/, publish the main table and verdict."""
    data = DataPaths(Path(data_root))
    ctx = AnalysisContext(params, data, list(models))
    result = run_analysis(ablation_id, ctx)
    folder = write_result(result, data.root / "results")
    key = ablation_id.lower()
    table = result.tables["main"].head(200).with_columns(pl.col(pl.Float64).round(4))
    create_table_artifact(
        key=f"{key}-main-table", table=table.fill_nan(None).to_dicts(),
        description=f"{ablation_id}: main table" + (" (SIMULATED)" if result.simulated else ""))
    create_markdown_artifact(
        key=f"{key}-verdict",
        markdown=(BANNER + "\n\n" if result.simulated else "") + f"**{ablation_id}**: "
        + result.verdict + f"\n\nResults: `{folder}`",
        description=f"{ablation_id}: verdict")
    return {"ablation": ablation_id, "outcome": result.outcome, "simulated": result.simulated,
            "verdict": result.verdict}


@task(name="report", **HOOKS)
def report_task(data_root: str, ablation_ids: list[str], data_files: list[str]) -> str:
    data = DataPaths(Path(data_root))
    path = write_report(data.root / "results", ablation_ids, [Path(f) for f in data_files])
    create_markdown_artifact(key="report", markdown=path.read_text(),
                             description="the full report (report.md)")
    return str(path)
