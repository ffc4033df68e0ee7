"""The dry-run view of a plan: calls needed, calls already stored, unique vs naive, time estimate.

Stored calls count only batches whose commit record carries the plan key the current parameters
and code give and whose files have the committed sizes: outdated batches (another batch size,
seed, prompt or code) and damaged ones count as not done. The model digest is not known without
asking the model server, so a re-pulled model shows up at run time, not here.

Estimated time uses the per-call latency measured in earlier runs (mean ``latency_s / n_calls``
over the model's stored predictions) or, for a model never run here, a stated default per backend;
calls in flight at once follow the backend's concurrency setting.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from emoface.ablations import BASELINE, Plan, WorkItem
from emoface.backends import ModelRef, backend_concurrency
from emoface.backends.base import StimulusInput
from emoface.config import Params
from emoface.errors import EmofaceError
from emoface.inference import batchfiles
from emoface.inference.store import (
    HiddenStateStore,
    PredictionStore,
    batches,
    hidden_plan_key,
    model_slug,
    plan_key,
)
from emoface.paths import DataPaths
from emoface.prompts import EMOTION_QUESTION


def set_size(params: Params, data: DataPaths, name: str) -> int | None:
    manifest = data.stimulus_set(name).manifest
    if manifest.exists():
        return pl.scan_csv(manifest).select(pl.len()).collect().item()
    if name == params.stimuli.set_name:
        s = params.stimuli
        return len(s.races) * len(s.genders) * s.identities_per_cell * len(params.study.emotions)
    return None


def _manifest(data: DataPaths, name: str) -> pl.DataFrame | None:
    path = data.stimulus_set(name).manifest
    return pl.read_csv(path, infer_schema=False) if path.exists() else None


def _labels(item: WorkItem, manifest: pl.DataFrame, params: Params,
            data: DataPaths) -> dict[str, str] | None | bool:
    """Text-only labels as the run would give them; False when they cannot be known yet."""
    from emoface.inference.engine import baseline_labels

    source = item.condition.label_source
    if source is None:
        return None
    if source == "intended":
        return dict(manifest.select("stimulus_id", "emotion").iter_rows())
    store = PredictionStore(data.root)
    try:
        base = store.read(store.condition_dir(item.stimulus_set, BASELINE.condition_id,
                                              item.model_id), params.study.emotions)
    except EmofaceError:
        return False  # the baseline is not complete: nothing of this condition can be current
    return baseline_labels(base)


def _stored_rows(item: WorkItem, data: DataPaths, params: Params) -> int:
    """Rows in batches that are current for this plan and whose files have committed sizes."""
    manifest = _manifest(data, item.stimulus_set)
    if manifest is None:
        return 0
    stims = [StimulusInput(sid, Path(f), sha) for sid, f, sha in
             manifest.select("stimulus_id", "file", "sha256").iter_rows()]
    chunks = batches(stims, params.inference.batch_size)
    if item.kind == "hidden":
        store, suffixes = HiddenStateStore(data.root), HiddenStateStore.SUFFIXES
        folder = store.model_dir(item.stimulus_set, item.model_id)
        prompt = EMOTION_QUESTION.format(emotions=", ".join(params.study.emotions))
        keys = [hidden_plan_key(prompt, c, model_id=item.model_id) for c in chunks]
    else:
        folder = PredictionStore(data.root).condition_dir(
            item.stimulus_set, item.condition.condition_id, item.model_id)
        suffixes = PredictionStore.SUFFIXES
        if not folder.is_dir():
            return 0
        labels = _labels(item, manifest, params, data)
        if labels is False:
            return 0
        options = item.condition.options(params.inference)
        keys = [plan_key(item.condition, options, c, labels, model_id=item.model_id)
                for c in chunks]
    done = 0
    for i, pk in enumerate(keys):
        record = batchfiles.read_record(folder, i)
        if record is None or record.get("plan_key") != pk:
            continue
        if batchfiles.check(folder, i, record["key"], suffixes, checksums=False).done:
            done += record["rows"]
    return done


def measured_latency(model_id: str, data: DataPaths) -> tuple[float, str]:
    files = list((data.root / "predictions").glob(f"*/*/{model_slug(model_id)}/b*.parquet"))
    parts = []
    for f in files:
        try:
            parts.append(pl.read_parquet(f, columns=["latency_s", "n_calls"]))
        except (pl.exceptions.PolarsError, OSError):
            continue  # a damaged batch: the run reports and redoes it
    if parts:
        df = pl.concat(parts)
        calls = df["n_calls"].sum()
        if calls:
            return float(df["latency_s"].sum() / calls), f"measured over {calls} calls"
    return ModelRef.parse(model_id).spec.default_latency_s, "default (never run here)"


def _concurrency(model_id: str, params: Params) -> int:
    return backend_concurrency(model_id, params.inference)


def summarize(plan: Plan, params: Params, data: DataPaths,
              workers: dict[str, int] | None = None) -> dict:
    """The plan as JSON-able data (what --dry-run prints). ``workers``: for a cluster run, how
    many Dask workers can serve each Ollama/MLX model (each with its own server), which divides
    that model's estimated time."""
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
        done = min(c, _stored_rows(it, data, params) * it.calls_per_stimulus())
        lat, source = measured_latency(it.model_id, data)
        latencies[it.model_id] = {"seconds_per_call": lat, "source": source}
        parallel = _concurrency(it.model_id, params) * max(1, (workers or {}).get(it.model_id, 1))
        seconds += (c - done) * lat / parallel
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
        "workers": workers,
        "unknown_sets": sorted(k for k, v in sizes.items() if v is None),
    }

