"""Running one condition for one model over a stimulus set, batch by batch, resumably.

This is the library form (no Prefect); ``tasks/inference.py`` wraps :func:`run_one_batch` as a
cached, retried Prefect task and the flows call it per batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from emoface.backends.base import Backend, GenerationOptions, StimulusInput
from emoface.inference.conditions import Condition
from emoface.inference.runner import run_batch
from emoface.inference.store import HiddenStateStore, PredictionStore, batch_key, batches
from emoface.prompts import EMOTION_QUESTION, calls_per_stimulus
from emoface.stimuli.store import StimulusSet


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
) -> list[BatchSpec]:
    """Split a (condition, model) into batches with their content keys."""
    info = backend.info
    folder = store.condition_dir(stimulus_set.paths.root.name, condition.condition_id, info.model_id)
    specs = []
    for i, chunk in enumerate(batches(stimulus_inputs(stimulus_set), batch_size)):
        key = batch_key(condition, info.digest, options, chunk, labels)
        chunk_labels = {s.stimulus_id: labels[s.stimulus_id] for s in chunk} if labels else None
        specs.append(BatchSpec(stimulus_set.paths.root.name, condition.work(), info.model_id, i, key,
                               tuple(chunk), options, chunk_labels, folder))
    return specs


def run_one_batch(backend: Backend, spec: BatchSpec, store: PredictionStore,
                  emotions: Sequence[str], on_done: Callable[[int], None] | None = None) -> int:
    """Run one batch unless its result is already stored; returns the backend calls made."""
    if store.is_done(spec.folder, spec.index, spec.key):
        return 0
    rows, records = run_batch(backend, spec.stimuli, spec.condition, emotions, spec.options,
                              labels=spec.labels, on_done=on_done, resume_key=spec.key)
    store.write_batch(spec.folder, spec.index, spec.key, rows, records, emotions)
    return sum(r["n_calls"] for r in rows)


def run_condition(
    backend: Backend,
    stimulus_set: StimulusSet,
    condition: Condition,
    options: GenerationOptions,
    store: PredictionStore,
    emotions: Sequence[str],
    *,
    batch_size: int,
    labels: Mapping[str, str] | None = None,
    on_done: Callable[[int], None] | None = None,
) -> tuple[pl.DataFrame, int]:
    """Run every missing batch; return all rows (validated) and the backend calls made."""
    specs = plan_condition(backend, stimulus_set, condition, options, store,
                           batch_size=batch_size, labels=labels)
    calls = run_specs(backend, specs, store, emotions, on_done)
    return store.read(specs[0].folder, emotions, n_batches=len(specs)), calls


def run_specs(backend: Backend, specs: Sequence[BatchSpec], store: PredictionStore,
              emotions: Sequence[str], on_done: Callable[[int], None] | None = None) -> int:
    """Run the batches of one (condition, model) that are not stored yet; returns the calls made.

    Leftover temporary files of a killed writer are swept first. Two batches are in progress at a
    time (the backend's limiter caps the calls in flight), so the backend stays busy while a
    finished batch is validated and written.
    """
    if not specs:
        return 0
    store.sweep(specs[0].folder)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return sum(pool.map(lambda s: run_one_batch(backend, s, store, emotions, on_done), specs))


def run_hidden_states(backend: Backend, stimulus_set: StimulusSet, store: HiddenStateStore,
                      emotions: Sequence[str], *, batch_size: int) -> list[Path]:
    """Extract per-layer hidden states for every image (A9), resumably; returns the layer files."""
    info = backend.info
    folder = store.model_dir(stimulus_set.paths.root.name, info.model_id)
    prompt = EMOTION_QUESTION.format(emotions=", ".join(emotions))
    stims = stimulus_inputs(stimulus_set)
    for i, chunk in enumerate(batches(stims, batch_size)):
        key = hashlib.sha256(
            f"{info.digest}|{prompt}|{[s.sha256 for s in chunk]}".encode()).hexdigest()
        if store.is_done(folder, i, key):
            continue
        states = [backend.hidden_states(s, prompt) for s in chunk]
        store.write_batch(folder, i, key, [s.stimulus_id for s in chunk], states)
    return store.assemble(folder, [s.stimulus_id for s in stims])
