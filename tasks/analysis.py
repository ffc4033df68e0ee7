"""Prefect tasks for analyses and the report.

An analysis task is cached on the content of what it reads (the commit records of the current
prediction batches and hidden-state layers of its work items), the analysis parameters, a hash of
the code it runs (the package source and schemas) and what it wrote (its metrics.json). There is
no cache key, so it runs, when the results folder was deleted or any input batch is not current
and intact (the analysis then says which batch and why).
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
from emoface.ablations import WorkItem
from emoface.analysis.ablations import run_analysis
from emoface.analysis.context import AnalysisContext
from emoface.analysis.report import BANNER, write_report, write_result
from emoface.config import Params
from emoface.inference import batchfiles
from emoface.inference.store import LAYERS_RECORD, HiddenStateStore, PredictionStore
from emoface.io import sha256_file
from emoface.paths import DataPaths
from emoface.provenance import analysis_code_hash
from tasks.record import HOOKS


def inputs_digest(items: Sequence[WorkItem], data: DataPaths) -> str | None:
    """Digest of the commit records of every current input batch (sizes verified), or None
    when one is missing, outdated or damaged."""
    h = hashlib.sha256()
    for it in items:
        if it.kind == "hidden":
            hs = HiddenStateStore(data.root)
            folder = hs.model_dir(it.stimulus_set, it.model_id)
            if hs.layers_current(folder, checksums=False) is not None:
                return None
            h.update((folder / LAYERS_RECORD).read_bytes())
            continue
        folder = PredictionStore(data.root).condition_dir(
            it.stimulus_set, it.condition.condition_id, it.model_id)
        keys = batchfiles.current_keys(folder)
        if keys is None:
            return None
        for i, key in enumerate(keys):
            if not batchfiles.check(folder, i, key, PredictionStore.SUFFIXES, checksums=False).done:
                return None
            h.update(batchfiles.record_file(folder, i).read_bytes())
    return h.hexdigest()


class AnalysisInputsPolicy(CachePolicy):
    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        data = DataPaths(Path(inputs["data_root"]))
        out = data.root / "results" / inputs["ablation_id"] / "metrics.json"
        if not out.exists():
            return None
        digest = inputs_digest(inputs["items"], data)
        if digest is None:
            return None
        h = hashlib.sha256()
        params: Params = inputs["params"]
        h.update(f"{inputs['ablation_id']}|{__version__}|{inputs['models']}|".encode())
        h.update(params.model_dump_json(include={"study", "analysis", "ablations",
                                                 "stimuli"}).encode())
        h.update(f"|code {analysis_code_hash()}|inputs {digest}|".encode())
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
