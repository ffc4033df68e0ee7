"""Prefect tasks for inference: one task run per batch of stimuli (not per image).

Caching: :class:`StoredBatchPolicy` keys a batch on its content key (stimulus hashes, condition,
model digest, prompt/parser versions and code, options, repeat) plus the digest of its commit
record, and never on retry settings or run ids. Unless the batch is committed and both its files
verify (never run, outdated, truncated, deleted by DVC before a re-run) there is no key, so the
task runs instead of returning a cached result. The flow submits only batches that need work.

Retries: only transient backend errors (:class:`TransientBackendError`) are retried at task level,
after the backend's own per-call retries gave up; bad inputs and permanent errors fail at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from emoface import stop
from emoface.backends.base import Backend, TransientBackendError
from emoface.errors import EmofaceError
from emoface.inference import batchfiles
from emoface.inference.engine import BatchSpec, run_one_batch
from emoface.inference.scheduler import Unit
from emoface.inference.store import PredictionStore
from emoface.io import sha256_file
from tasks import monitor, progress
from tasks.record import HOOKS


class BatchFailed(EmofaceError):
    """A batch failed; the message says which and how to resume."""


def batch_failed(context: str, spec: BatchSpec, err: BaseException, where: str = "") -> BatchFailed:
    """The one line for a failed batch: where it happened and how to resume."""
    return BatchFailed(
        f"{context}: batch b{spec.index:04d} of {spec.model_id} / "
        f"{spec.condition.condition_id} [{spec.stimulus_set}] failed{where}: {err}. "
        "Fix the cause and run the same command again: finished batches are "
        "kept and only the missing ones run.")


def batch_label(spec: BatchSpec, where: str = "") -> str:
    return (f"{spec.model_id} | {spec.condition.condition_id} | {spec.stimulus_set} "
            f"b{spec.index:04d}{where}")


class StoredBatchPolicy(CachePolicy):
    """Cache key = batch content key + digest of its commit record (None unless done)."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        spec: BatchSpec = inputs["spec"]
        if not PredictionStore(Path(inputs["data_root"])).is_done(spec.folder, spec.index, spec.key):
            return None
        record = batchfiles.record_file(spec.folder, spec.index)
        return f"batch-{spec.key[:32]}-{sha256_file(record)[:32]}"


def retry_transient_only(task, task_run, state) -> bool:
    """Retry the batch only when the backend said the failure was transient; never once a
    circuit breaker found the server down (:class:`ServerDown`) or the run was interrupted."""
    try:
        state.result()
    except TransientBackendError:
        return not stop.STOP.is_set()
    except Exception:  # noqa: BLE001 - anything else is not worth retrying
        return False
    return False


@task(
    **HOOKS,
    name="inference-batch",
    task_run_name="{spec.model_id} | {spec.condition.condition_id} | {spec.stimulus_set} b{spec.index}",
    cache_policy=StoredBatchPolicy(),
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_transient_only,
    persist_result=True,
    result_serializer="json",
)
def inference_batch(backend: Backend, spec: BatchSpec, data_root: str,
                    emotions: Sequence[str]) -> dict:
    """Run one batch unless stored; returns the backend calls made (0 when already stored)."""
    store = PredictionStore(Path(data_root))
    backend.on_retry = progress.retried  # retried requests show beside the progress bar
    t0 = time.perf_counter()
    calls = run_one_batch(backend, spec, store, emotions, on_done=progress.advance)
    if calls == 0:
        progress.advance(len(spec.stimuli))
    return {"batch": spec.index, "calls": calls, "stimuli": len(spec.stimuli),
            "wall_s": round(time.perf_counter() - t0, 3)}


@task(
    **HOOKS,
    name="inference-image-major",
    task_run_name="{label}",
    cache_policy=NO_CACHE,  # the batch store decides what runs; a loaded model is not hashed
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_transient_only,
)
def inference_group(backend: Backend, group: list[BatchSpec], data_root: str,
                    emotions: Sequence[str], label: str) -> dict:
    """Batches of several conditions that share a first turn, run image-major
    (:mod:`emoface.inference.shared`); each is stored as its own batch, so the per-batch tasks
    that follow find them stored."""
    from emoface.inference.shared import run_group

    backend.on_retry = progress.retried
    calls = run_group(backend, group, PredictionStore(Path(data_root)), emotions,
                      on_done=progress.advance)
    return {"batches": len(group), "calls": calls}


class PrefectExecutor:
    """The scheduler's units as Prefect task runs of the current flow (in this process, on its
    task runner's threads): a batch as :func:`inference_batch`, an image-major group as
    :func:`inference_group`. Each one finished gets a log line and moves its subflow's
    progress; a failed one raises :class:`BatchFailed` saying where and how to resume."""

    def __init__(self, data_root: str, emotions: Sequence[str], context: str) -> None:
        self.data_root, self.emotions, self.context = data_root, tuple(emotions), context
        self.calls = 0  # of every unit finished so far (a failed schedule included)

    def submit(self, unit: Unit):
        if len(unit.specs) == 1:
            return inference_batch.submit(unit.backend, unit.first, self.data_root, self.emotions)
        return inference_group.submit(unit.backend, list(unit.specs), self.data_root,
                                      self.emotions, unit.label)

    def finish(self, unit: Unit, future) -> int:
        future.wait()
        state = future.state
        if state.is_failed():
            try:
                state.result()
            except Exception as err:  # noqa: BLE001 - re-raised with where it happened
                raise batch_failed(self.context, unit.first, err) from err
        out = state.result() or {}
        for s in unit.specs:
            monitor.finished(batch_label(s), PredictionStore.batch_file(s.folder, s.index, "parquet")
                             if out.get("calls") else None,
                             out.get("wall_s") if len(unit.specs) == 1 else None)
        self.calls += out.get("calls", 0)
        return out.get("calls", 0)

    def cancel(self, future) -> None:
        future.wrapped_future.cancel()  # not started yet: never starts
