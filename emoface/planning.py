"""The dry-run view of a plan: calls needed, calls already stored, unique vs naive, time estimate.

Stored calls count only batches whose commit record carries the plan key the current parameters
and code give and whose files have the committed sizes: outdated batches (another batch size,
seed, prompt or code) and damaged ones count as not done. The model digest is not known without
asking the model server, so a re-pulled model shows up at run time, not here.

Estimated time uses the per-call latency measured in earlier runs (mean ``latency_s / n_calls``
over the model's stored predictions) or, for a model never run here, a stated default per backend;
calls in flight at once follow the backend's concurrency setting. The analyses that will run (those
whose results are not current) add the time each took when it last ran here (recorded beside its
results, ``results/<ID>/analysis-key.json``) or a stated default per ablation.

Per ablation, the summary lists the models it uses; when some models are real (Ollama, MLX) and an
ablation still uses a simulated one, one warning line per such ablation names the models and the
params.yaml keys that hold them (``--models`` replaces only the study models).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from emoface.ablations import Plan, WorkItem, baseline_ablation
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

#: seconds the report takes when an analysis never ran in this data folder (each analysis, the
#: baseline's included, states its own: ``Ablation.analysis_seconds``). The stated defaults are the
#: CPU seconds each took here (default parameters, 1,440 stimuli; on a quiet machine about its
#: wall time, on a loaded one more: A8 18 s CPU took 71-185 s at load 10-25 on 2 cores); a run
#: records its own time and the next dry run uses that
DEFAULT_REPORT_S = 5.0
#: backends that are not a real VLM: the simulator, and the FER classifier (real, but it runs
#: beside simulated VLMs too, so it alone does not make a plan "real"); every other backend in
#: the registry (a server or local weights) is a real VLM
NOT_REAL_VLM_BACKENDS = ("simulated", "fer")


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

    if item.condition.label_source is None:
        return None
    source = item.depends_on
    if source is None:
        return dict(manifest.select("stimulus_id", "emotion").iter_rows())
    store = PredictionStore(data.root)
    try:
        base = store.read(store.condition_dir(item.stimulus_set, source.condition.condition_id,
                                              item.model_id), params.study.emotions)
    except EmofaceError:
        return False  # the answers it needs are not complete: nothing of it can be current
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


def _backend(model_id: str) -> str:
    return ModelRef.parse(model_id).backend


def models_by_ablation(plan: Plan) -> dict[str, list[str]]:
    """Ablation id -> the models its work uses (its baseline's included), in plan order."""
    out = {}
    for aid in plan.ablations:
        out[aid] = list(dict.fromkeys(it.model_id for it in plan.per_ablation.get(aid, [])))
    return out


def _model_keys(params: Params, aid: str, model_id: str) -> str:
    """Where ``model_id`` comes from for ablation ``aid``: its params section, else models.*."""
    section = getattr(params.ablations, aid, None)
    if section is not None:
        for key, value in section.model_dump().items():
            if value == model_id or (isinstance(value, list | tuple) and model_id in value):
                return f"ablations.{aid}.{key}"
        fp16 = section.model_dump().get("fp16")
        if isinstance(fp16, str) and model_id.startswith(f"{fp16}@"):
            return f"ablations.{aid}.fp16"
    if model_id in params.models.fer:
        return "models.fer"
    return "models.study / --models"


def simulated_warnings(plan: Plan, params: Params) -> list[str]:
    """One line per ablation that still uses a simulated model while the plan has real VLMs
    (a server or local weights) elsewhere; empty when every VLM is real, or every VLM is
    simulated."""
    per = models_by_ablation(plan)
    used = {m for ms in per.values() for m in ms}
    real = sorted(m for m in used if _backend(m) not in NOT_REAL_VLM_BACKENDS)
    if not real:
        return []
    lines = []
    for aid, ms in per.items():
        sims = [m for m in ms if _backend(m) == "simulated"]
        if sims:
            where = ", ".join(f"{m} ({_model_keys(params, aid, m)})" for m in sims)
            where = ("models " if len(sims) > 1 else "model ") + where
            lines.append(f"warning: {aid} still uses simulated {where} while the run has real "
                         f"models ({', '.join(real)}); set that key in params.yaml to go real "
                         "(README: Switching to real models)")
    return lines


def analysis_seconds(aid: str, data: DataPaths) -> tuple[float, str]:
    """Seconds the analysis ``aid`` took when it last ran in this data folder, else a default."""
    import json

    from emoface.uptodate import ANALYSIS_KEY

    try:
        rec = json.loads((data.root / "results" / aid / ANALYSIS_KEY).read_text())
        seconds = float(rec["seconds"])
        if seconds >= 0:
            return seconds, "measured"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from emoface.ablations import get

    return get(aid).analysis_seconds, "default"


def _analyses_to_run(plan: Plan, params: Params, data: DataPaths,
                     pending: set[tuple]) -> list[str]:
    """The analyses a run would compute: every one whose inputs still need calls, or whose
    recorded key no longer matches (results missing, inputs, parameters or code changed)."""
    from emoface.uptodate import analysis_is_current, analysis_key

    todo = []
    for aid, items in plan.analyses(params).items():
        if any(it.key in pending for it in items) or not analysis_is_current(
                aid, analysis_key(aid, params, data, plan.models, items), data):
            todo.append(aid)
    return todo


def summarize(plan: Plan, params: Params, data: DataPaths,
              workers: dict[str, int] | None = None, *, analyses: bool = True) -> dict:
    """The plan as JSON-able data (what --dry-run prints). ``workers``: for a cluster run, how
    many Dask workers can serve each Ollama/MLX model (each with its own server), which divides
    that model's estimated time. ``analyses``: the run computes the analyses too (their time is
    in the estimate)."""
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
    pending: set[tuple] = set()
    for it in plan.unique:
        c = calls(it)
        done = min(c, _stored_rows(it, data, params) * it.calls_per_stimulus())
        if c == 0 or done < c:
            pending.add(it.key)
        lat, source = measured_latency(it.model_id, data)
        latencies[it.model_id] = {"seconds_per_call": lat, "source": source}
        parallel = _concurrency(it.model_id, params) * max(1, (workers or {}).get(it.model_id, 1))
        seconds += (c - done) * lat / parallel
        unique_total += c
        done_total += done
        conditions.append({
            "kind": it.kind, "stimulus_set": it.stimulus_set, "model_id": it.model_id,
            "condition_id": it.key[3], "needed_by": needed_by.get(it.key, [baseline_ablation().id]),
            "calls": c, "calls_done": done, "calls_per_stimulus": it.calls_per_stimulus(),
            "stimuli_known": sizes[it.stimulus_set] is not None,
        })
    naive = sum(calls(it) for items in plan.per_ablation.values() for it in items)
    analysis_times: dict[str, dict] = {}
    if analyses:
        for aid in _analyses_to_run(plan, params, data, pending):
            sec, source = analysis_seconds(aid, data)
            analysis_times[aid] = {"seconds": sec, "source": source}
    analysis_total = sum(v["seconds"] for v in analysis_times.values())
    if analysis_times:
        analysis_total += DEFAULT_REPORT_S
    return {
        "ablations": plan.ablations,
        "models": plan.models,
        "models_by_ablation": models_by_ablation(plan),
        "warnings": simulated_warnings(plan, params),
        "conditions": conditions,
        "calls_total": naive,
        "calls_unique": unique_total,
        "calls_done": done_total,
        "calls_remaining": unique_total - done_total,
        "estimated_seconds": round(seconds + analysis_total, 1),
        "estimated_inference_seconds": round(seconds, 1),
        "estimated_analysis_seconds": round(analysis_total, 1),
        "analyses_to_run": analysis_times,
        "latency": latencies,
        "workers": workers,
        "unknown_sets": sorted(k for k, v in sizes.items() if v is None),
    }

