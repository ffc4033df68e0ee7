"""Prefect tasks for analyses and the report.

An analysis task is cached on the content of what it reads (the commit records of the current
prediction batches and hidden-state layers of its work items), the analysis parameters, a hash of
the code it runs (the package source and schemas) and what it wrote (its metrics.json). There is
no cache key, so it runs, when the results folder was deleted or any input batch is not current
and intact (the analysis then says which batch and why).
Its main table and verdict are published as Prefect artifacts.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext

from emoface.ablations import WorkItem, run_analysis
from emoface.analysis.context import AnalysisContext
from emoface.analysis.headline import write_headline
from emoface.analysis.report import BANNER, write_report, write_result
from emoface.config import Params
from emoface.paths import DataPaths
from emoface.uptodate import (
    analysis_is_current,
    analysis_key,
    record_analysis,
    record_report,
    report_key,
)
from tasks.record import HOOKS


class AnalysisInputsPolicy(CachePolicy):
    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        data, aid = DataPaths(Path(inputs["data_root"])), inputs["ablation_id"]
        key = analysis_key(aid, inputs["params"], data, inputs["models"], inputs["items"])
        if not analysis_is_current(aid, key, data):
            return None  # results missing, edited, or made from other inputs, params or code
        return f"analysis-{aid}-{key[:40]}"


@task(name="analysis", task_run_name="analysis {ablation_id}", cache_policy=AnalysisInputsPolicy(),
      persist_result=True, result_serializer="json", **HOOKS)
def analysis_task(ablation_id: str, params: Params, data_root: str, models: list[str],
                  items: list[WorkItem]) -> dict:
    """Run one analysis, write data/results/<ID>/, publish the main table and verdict."""
    data = DataPaths(Path(data_root))
    ctx = AnalysisContext(params, data, list(models))
    inputs_key = analysis_key(ablation_id, params, data, models, items)  # before it reads them
    t0 = time.perf_counter()
    result = run_analysis(ablation_id, ctx)
    folder = write_result(result, data.root / "results")
    write_headline(ablation_id, result.outcome, result.tables, folder)  # the DVC metrics
    record_analysis(ablation_id, inputs_key, data, seconds=time.perf_counter() - t0)
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


@task(name="report", cache_policy=NO_CACHE, **HOOKS)  # report_key decides; cheap to rewrite
def report_task(data_root: str, ablation_ids: list[str], data_files: list[str],
                alpha: float = 0.05) -> str:
    data = DataPaths(Path(data_root))
    key = report_key(data, ablation_ids, [Path(f) for f in data_files])
    path = write_report(data.root / "results", ablation_ids, [Path(f) for f in data_files],
                        alpha=alpha)
    record_report(data, key)
    create_markdown_artifact(key="report", markdown=report_markdown(path),
                             description=f"the full report ({path})")
    for f in (path, path.with_suffix(".html")):
        if f.exists():
            create_link_artifact(key=f"report-{f.suffix[1:]}", link=f.resolve().as_uri(),
                                 link_text=str(f), description=f"the report as {f.suffix[1:]}")
    return str(path)


_REL_LINK = re.compile(r"(!?)\[([^\]]*)\]\((?!https?:|file:|#|/)([^)\s]+)\)")


def report_markdown(path: Path) -> str:
    """report.md for a Prefect markdown artifact: a first line linking the files, and every
    relative link (figures, tables, the analysis plan) made an absolute ``file://`` link. The UI
    does not load images from the local disk, so each figure becomes a link to its PNG."""
    folder = path.parent.resolve()

    def absolute(m: re.Match) -> str:
        file, _, fragment = m.group(3).partition("#")
        target = (folder / file).resolve()
        text = m.group(2) or ("figure " + target.name if m.group(1) else target.name)
        return f"[{text}]({target.as_uri()}{'#' + fragment if fragment else ''})"

    html = path.with_suffix(".html")
    head = f"Report: [{path.name}]({path.resolve().as_uri()})" + (
        f" · [{html.name}]({html.resolve().as_uri()})" if html.exists() else "")
    return head + "\n\n" + _REL_LINK.sub(absolute, path.read_text())
