"""Running one condition for one model over a stimulus set, batch by batch, resumably.

This is the library form (no Prefect): planning and one batch. :mod:`emoface.inference.scheduler`
keeps batches in flight (in process, as Prefect tasks from ``tasks/inference.py``, or on Dask).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from emoface.backends.base import Backend, GenerationOptions, StimulusInput
from emoface.inference.conditions import Condition
from emoface.inference.runner import run_batch
from emoface.inference.store import (
    HiddenStateStore,
    PredictionStore,
    batches,
    hidden_plan_key,
    key_with_digest,
    plan_key,
)
from emoface.prompts import EMOTION_QUESTION, calls_per_stimulus
from emoface.stimuli.store import StimulusSet

log = logging.getLogger(__name__)


def stimulus_inputs(stimulus_set: StimulusSet) -> list[StimulusInput]:
    """The set's stimuli in manifest order, as backends see them."""
    root = stimulus_set.paths.root
    return [StimulusInput(sid, root / f, sha) for sid, f, sha in
            stimulus_set.manifest.select("stimulus_id", "file", "sha256").iter_rows()]


def intended_labels(stimulus_set: StimulusSet) -> dict[str, str]:
    return dict(stimulus_set.manifest.select("stimulus_id", "emotion").iter_rows())


def baseline_labels(baseline: pl.DataFrame) -> dict[str, str]:
    """The model's own baseline emotion per stimulus; failed parses fall back to the raw status
    word so the text-only prompt still names *something* the model said (documented choice)."""
    out = {}
    for sid, emotion, status in baseline.select("stimulus_id", "emotion",
                                                "emotion_status").iter_rows():
        out[sid] = emotion if emotion is not None else f"unknown ({status})"
    return out


@dataclass(frozen=True)
class BatchSpec:
    """Everything that identifies one batch of work."""

    stimulus_set: str
    condition: Condition
    model_id: str
    index: int
    key: str
    stimuli: tuple[StimulusInput, ...]
    options: GenerationOptions
    labels: Mapping[str, str] | None
    folder: Path
    plan_key: str = ""

    @property
    def calls(self) -> int:
        return len(self.stimuli) * calls_per_stimulus(self.condition.protocol)


def plan_condition(
    backend: Backend,
    stimulus_set: StimulusSet,
    condition: Condition,
    options: GenerationOptions,
    store: PredictionStore,
    *,
    batch_size: int,
    labels: Mapping[str, str] | None = None,
    record: bool = True,
) -> list[BatchSpec]:
    """Split a (condition, model) into batches with their content keys, and (``record``) record
    those keys as the folder's current batches (readers read exactly these; others are stale).
    A check ("anything to do?") plans with ``record=False``: it writes nothing."""
    from emoface.results.imported import imported_keys

    info = backend.info
    folder = store.condition_dir(stimulus_set.paths.root.name, condition.condition_id, info.model_id)
    chunks = batches(stimulus_inputs(stimulus_set), batch_size)
    pks = [plan_key(condition, options, c, labels, model_id=info.model_id) for c in chunks]
    # answers brought in by `emoface results import` stand for the model: their keys, no calls
    keys = imported_keys(folder, pks) or [key_with_digest(pk, info.digest) for pk in pks]
    specs = []
    for i, (chunk, pk, key) in enumerate(zip(chunks, pks, keys, strict=True)):
        chunk_labels = {s.stimulus_id: labels[s.stimulus_id] for s in chunk} if labels else None
        specs.append(BatchSpec(stimulus_set.paths.root.name, condition.work(), info.model_id, i,
                               key, tuple(chunk), options, chunk_labels, folder, pk))
    if record:
        store.set_current(folder, [s.key for s in specs])
    return specs


def pending_specs(specs: Sequence[BatchSpec], store: PredictionStore) -> list[BatchSpec]:
    """The batches that need running: missing, outdated or damaged (each damaged one is logged
    by path). One verification per batch (sizes and checksums), no task per batch."""
    todo = []
    for spec in specs:
        c = store.check(spec.folder, spec.index, spec.key)
        if c.state == "damaged":
            log.warning("damaged batch, redoing it: %s (%s)", c.path, c.detail)
        if not c.done:
            todo.append(spec)
    return todo


def run_one_batch(backend: Backend, spec: BatchSpec, store: PredictionStore,
                  emotions: Sequence[str], on_done: Callable[[int], None] | None = None) -> int:
    """Run one batch unless its result is already stored; returns the backend calls made."""
    if store.is_done(spec.folder, spec.index, spec.key):
        return 0
    rows, records = run_batch(backend, spec.stimuli, spec.condition, emotions, spec.options,
                              labels=spec.labels, on_done=on_done, resume_key=spec.key)
    store.write_batch(spec.folder, spec.index, spec.key, rows, records, emotions,
                      plan_key=spec.plan_key)
    return sum(r["n_calls"] for r in rows)


@dataclass(frozen=True)
class HiddenPlan:
    """The hidden-state batches of one model over one stimulus set, with their keys."""

    folder: Path
    prompt: str
    stimuli: tuple[StimulusInput, ...]
    chunks: tuple[tuple[StimulusInput, ...], ...]
    plan_keys: tuple[str, ...]
    keys: tuple[str, ...]


def plan_hidden_states(backend: Backend, stimulus_set: StimulusSet, store: HiddenStateStore,
                       emotions: Sequence[str], *, batch_size: int,
                       record: bool = True) -> HiddenPlan:
    """Split the hidden-state extraction into batches and (``record``) record their keys as the
    folder's current ones (a check plans with ``record=False`` and writes nothing)."""
    info = backend.info
    prompt = EMOTION_QUESTION.format(emotions=", ".join(emotions))
    stims = stimulus_inputs(stimulus_set)
    chunks = tuple(tuple(c) for c in batches(stims, batch_size))
    plans = tuple(hidden_plan_key(prompt, c, model_id=info.model_id) for c in chunks)
    plan = HiddenPlan(store.model_dir(stimulus_set.paths.root.name, info.model_id), prompt,
                      tuple(stims), chunks, plans,
                      tuple(key_with_digest(pk, info.digest) for pk in plans))
    if record:
        store.set_current(plan.folder, plan.keys)
    return plan


def hidden_states_complete(plan: HiddenPlan, store: HiddenStateStore) -> bool:
    """True when every batch verifies and the layer files are assembled from them."""
    return (all(store.is_done(plan.folder, i, k) for i, k in enumerate(plan.keys))
            and store.layers_current(plan.folder) is None)


def run_hidden_states(backend: Backend, stimulus_set: StimulusSet, store: HiddenStateStore,
                      emotions: Sequence[str], *, batch_size: int) -> list[Path]:
    """Extract per-layer hidden states for every image (A9), resumably; returns the layer files.

    Missing, outdated and damaged batches are (re)done; the layers are re-assembled when their
    record does not match the current batches or a layer file fails verification."""
    plan = plan_hidden_states(backend, stimulus_set, store, emotions, batch_size=batch_size)
    folder = plan.folder
    for i, (chunk, key) in enumerate(zip(plan.chunks, plan.keys, strict=True)):
        c = store.check(folder, i, key)
        if c.done:
            continue
        if c.state == "damaged":
            log.warning("damaged hidden-state batch, redoing it: %s (%s)", c.path, c.detail)
        states = [backend.hidden_states(s, plan.prompt) for s in chunk]
        store.write_batch(folder, i, key, [s.stimulus_id for s in chunk], states,
                          plan_key=plan.plan_keys[i])
    if store.layers_current(folder) is None:
        return sorted(folder.glob("layer_*.npz"))
    return store.assemble(folder, [s.stimulus_id for s in plan.stimuli])
