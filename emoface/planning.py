"""The dry-run view of a plan: calls needed, calls already stored, unique vs naive, time estimate.

Estimated time uses the per-call latency measured in earlier runs (mean ``latency_s / n_calls``
over the model's stored predictions) or, for a model never run here, a stated default per backend;
calls in flight at once follow the backend's concurrency setting.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from emoface.ablations import Plan, WorkItem
from emoface.config import Params
from emoface.inference.store import HiddenStateStore, PredictionStore, model_slug
from emoface.paths import DataPaths

DEFAULT_LATENCY_S = {"simulated": 0.0005, "ollama": 3.0, "mlx": 2.0, "fer": 0.002}


def set_size(params: Params, data: DataPaths, name: str) -> int | None:
    manifest = data.stimulus_set(name).manifest
    if manifest.exists():
        return pl.scan_csv(manifest).select(pl.len()).collect().item()
    if name == params.stimuli.set_name:
        s = params.stimuli
        return len(s.races) * len(s.genders) * s.identities_per_cell * len(params.study.emotions)
    return None


def _stored_rows(item: WorkItem, data: DataPaths) -> int:
    if item.kind == "hidden":
        folder = HiddenStateStore(data.root).model_dir(item.stimulus_set, item.model_id)
        files = sorted(folder.glob("b*.npz")) if folder.is_dir() else []
        return sum(len(np.load(f)["stimulus_id"]) for f in files)
    folder = PredictionStore(data.root).condition_dir(item.stimulus_set,
                                                      item.condition.condition_id, item.model_id)
    files = sorted(folder.glob("b*.parquet")) if folder.is_dir() else []
    return sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)


def measured_latency(model_id: str, data: DataPaths) -> tuple[float, str]:
    files = list((data.root / "predictions").glob(f"*/*/{model_slug(model_id)}/b*.parquet"))
    if files:
        df = pl.concat([pl.read_parquet(f, columns=["latency_s", "n_calls"]) for f in files])
        calls = df["n_calls"].sum()
        if calls:
            return float(df["latency_s"].sum() / calls), f"measured over {calls} calls"
    backend = model_id.split("/", 1)[0]
    return DEFAULT_LATENCY_S.get(backend, 1.0), "default (never run here)"


def _concurrency(model_id: str, params: Params) -> int:
    backend = model_id.split("/", 1)[0]
    if backend == "ollama":
        return params.inference.ollama.concurrency
    if backend == "simulated":
        return params.inference.simulated.capacity or 8
    return 1


def summarize(plan: Plan, params: Params, data: DataPaths) -> dict:
    """The plan as JSON-able data (what --dry-run prints)."""
    sizes: dict[str, int | None] = {}
    needed_by: dict[tuple, list[str]] = {}
    for a, items in plan.per_ablation.items():
        for it in items:
            needed_by.setdefault(it.key, []).append(a)

    def calls(it: WorkItem) -> int:
        if it.stimulus_set not in sizes:
            sizes[it.stimulus_set] = set_size(params, data, it.stimulus_set)
        n = sizes[it.stimulus_set]
        return 0 if n is None else n * it.calls_per_stimulus()

    conditions, done_total, unique_total, seconds = [], 0, 0, 0.0
    latencies: dict[str, dict] = {}
    for it in plan.unique:
        c = calls(it)
        done = min(c, _stored_rows(it, data) * it.calls_per_stimulus())
        lat, source = measured_latency(it.model_id, data)
        latencies[it.model_id] = {"seconds_per_call": lat, "source": source}
        seconds += (c - done) * lat / _concurrency(it.model_id, params)
        unique_total += c
        done_total += done
        conditions.append({
            "kind": it.kind, "stimulus_set": it.stimulus_set, "model_id": it.model_id,
            "condition_id": it.key[3], "needed_by": needed_by.get(it.key, ["baseline"]),
            "calls": c, "calls_done": done, "calls_per_stimulus": it.calls_per_stimulus(),
            "stimuli_known": sizes[it.stimulus_set] is not None,
        })
    naive = sum(calls(it) for items in plan.per_ablation.values() for it in items)
    return {
        "ablations": plan.ablations,
        "models": plan.models,
        "conditions": conditions,
        "calls_total": naive,
        "calls_unique": unique_total,
        "calls_done": done_total,
        "calls_remaining": unique_total - done_total,
        "estimated_seconds": round(seconds, 1),
        "latency": latencies,
        "unknown_sets": sorted(k for k, v in sizes.items() if v is None),
    }

