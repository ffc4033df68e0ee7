"""The one inference scheduler: work is planned into units once (a batch, or an image-major group
of batches that share a first turn), a bounded window of units is kept in flight on an executor,
and each unit is committed through the store (:class:`~emoface.inference.store.PredictionStore`)
as soon as it finishes, in whatever order units finish.

Executors plug in (:class:`Executor`): in process on threads (:class:`ThreadExecutor`, here),
Prefect tasks (``tasks/inference.py``) and a Dask cluster (``tasks/cluster.py``). The library
imports neither Prefect nor Dask; an executor's ``submit`` only needs to return a future with
``add_done_callback`` (``concurrent.futures``, Prefect's and Dask's futures all have it).

In this process, the conversations of every batch in flight against one backend share one pool of
threads (:func:`~emoface.inference.runner.conversation_pool`): a conversation sleeping in a retry
backoff leaves its slot of the backend's ``max_concurrency`` to a conversation of the same or of a
later batch, and the window admits another unit whenever the pool has run out of conversations to
start (:func:`window_for`), so a backing-off conversation never idles the server while there is
work left, and a batch waiting for its slowest conversation does not hold the next ones back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any, Protocol

import polars as pl

from emoface.backends.base import Backend, GenerationOptions
from emoface.inference.conditions import Condition
from emoface.inference.engine import BatchSpec, pending_specs, plan_condition, run_one_batch
from emoface.inference.runner import conversation_pool
from emoface.inference.shared import group_image_major, run_group
from emoface.inference.store import PredictionStore
from emoface.stimuli.store import StimulusSet

#: units in flight at most, whatever the room in the conversation pool (bounds the memory of
#: finished conversations waiting for their batch's slowest one)
MAX_UNITS_IN_FLIGHT = 16
#: units in flight for a backend that runs one conversation at a time: the next one computes
#: while the previous one is validated and written
SERIAL_WINDOW = 2


@dataclass(frozen=True)
class Unit:
    """One piece of work: one batch, or batches of one model over the same stimuli that share a
    first turn (run image-major, each stored as its own batch)."""

    backend: Any  # a Backend, or what an executor stands in for one with (a cluster's model)
    specs: tuple[BatchSpec, ...]

    @property
    def first(self) -> BatchSpec:
        return self.specs[0]

    @property
    def label(self) -> str:
        s = self.first
        what = (s.condition.condition_id if len(self.specs) == 1
                else f"{len(self.specs)} conditions")
        return f"{s.model_id} | {what} | {s.stimulus_set} b{s.index:04d}"


class Executor(Protocol):
    """Runs units: ``submit`` starts one and returns its future (with ``add_done_callback``);
    ``finish`` is called in the scheduling thread once that future is done and returns the
    backend calls it made (it commits the unit when the executor computed it elsewhere, and
    raises for a failed one); ``cancel`` drops a unit still in flight when the run stops."""

    def submit(self, unit: Unit) -> Any: ...

    def finish(self, unit: Unit, future: Any) -> int: ...

    def cancel(self, future: Any) -> None: ...


def plan_units(work: Iterable[tuple[Any, Sequence[BatchSpec]]], store: PredictionStore,
               emotions: Sequence[str], *, image_major: bool = True) -> list[Unit]:
    """The units of the batches still to run: ``work`` is (backend, planned specs) per
    condition; each batch is verified once (:func:`pending_specs`), and with ``image_major``
    the pending batches of one model that share a first turn become one unit."""
    backends, pending = {}, []
    for backend, specs in work:
        for s in pending_specs(specs, store):
            backends[s.key] = backend
            pending.append(s)
    if not image_major:
        return [Unit(backends[s.key], (s,)) for s in pending]
    return [Unit(backends[g[0].key], tuple(g)) for g in group_image_major(pending, emotions)]


def schedule(units: Iterable[Unit], executor: Executor, *, window: int | Callable[[], int] = 2,
             room: Callable[[], bool] | None = None,
             more: Callable[[Unit], Iterable[Unit]] | None = None,
             tick: Callable[[], None] | None = None, poll_s: float = 0.05) -> int:
    """Run ``units`` through ``executor`` with at most ``window`` in flight (a number, or asked
    again each round), and, while any is in flight, only when ``room()`` says the executor can
    use another; each is finished (committed) as it completes. Returns the calls made.

    ``more(unit)``, asked after each finished unit, returns units that were waiting for it
    (they join the end of the queue); ``tick()`` runs each round (a health check that may raise). A
    unit that fails raises out of here; the units still in flight are cancelled."""
    queue: deque[Unit] = deque(units)
    running: dict[Any, Unit] = {}
    done: Queue = Queue()
    calls = 0
    try:
        while queue or running:
            limit, by_room = max(1, window() if callable(window) else window), 0
            while queue and len(running) < limit:
                if running and room is not None:
                    # one unit per round is admitted on room: it takes the room up (its
                    # conversations queue) before room is asked again
                    if by_room or not room():
                        break
                    by_room = 1
                unit = queue.popleft()
                future = executor.submit(unit)
                running[future] = unit
                future.add_done_callback(done.put)
            try:
                future = done.get(timeout=poll_s)
            except Empty:
                future = None
            if tick is not None:
                tick()
            if future is None:
                continue
            unit = running.pop(future)
            calls += executor.finish(unit, future)
            if more is not None:
                queue.extend(more(unit))
    finally:
        for future in running:  # a failed run leaves no work behind
            executor.cancel(future)
    return calls


def window_for(units: Sequence[Unit]) -> tuple[int, Callable[[], bool] | None]:
    """(window, room) for :func:`schedule` in this process: while a backend of ``units`` runs
    conversations on a pool, another unit is admitted whenever that pool has no conversation
    waiting for a thread (its server always has work; at most :data:`MAX_UNITS_IN_FLIGHT`);
    a backend that runs one conversation at a time gets :data:`SERIAL_WINDOW` units, or one
    at a time when some are image-major groups (two would take turns with its kept first-turn
    states)."""
    pools = [p for p in {id(u.backend): conversation_pool(u.backend) for u in units
                         if isinstance(u.backend, Backend)}.values() if p is not None]
    if not pools:
        return (1 if any(len(u.specs) > 1 for u in units) else SERIAL_WINDOW), None
    return MAX_UNITS_IN_FLIGHT, lambda: any(p.backlog == 0 for p in pools)


def run_unit(unit: Unit, store: PredictionStore, emotions: Sequence[str],
             on_done: Callable[[int], None] | None = None) -> int:
    """Compute and commit one unit in this process; returns the calls made."""
    if len(unit.specs) == 1:
        return run_one_batch(unit.backend, unit.first, store, emotions, on_done)
    return run_group(unit.backend, unit.specs, store, emotions, on_done)


class ThreadExecutor:
    """Units on threads of this process, each computed and committed in its thread."""

    def __init__(self, store: PredictionStore, emotions: Sequence[str],
                 on_done: Callable[[int], None] | None = None) -> None:
        self.store, self.emotions, self.on_done = store, emotions, on_done
        self.pool = ThreadPoolExecutor(max_workers=MAX_UNITS_IN_FLIGHT,
                                       thread_name_prefix="batch")

    def submit(self, unit: Unit) -> Future:
        return self.pool.submit(run_unit, unit, self.store, self.emotions, self.on_done)

    def finish(self, unit: Unit, future: Future) -> int:
        return future.result()

    def cancel(self, future: Future) -> None:
        future.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def sweep(units: Iterable[Unit], store: PredictionStore) -> None:
    """Leftover temporary files of a killed writer, in every folder the units write."""
    for folder in dict.fromkeys(s.folder for u in units for s in u.specs):
        store.sweep(folder)


def run_units(units: Sequence[Unit], store: PredictionStore, emotions: Sequence[str],
              on_done: Callable[[int], None] | None = None) -> int:
    """Run ``units`` in this process, keeping their backends' servers full; returns the calls."""
    if not units:
        return 0
    sweep(units, store)
    executor = ThreadExecutor(store, emotions, on_done)
    window, room = window_for(units)
    try:
        return schedule(units, executor, window=window, room=room)
    finally:
        executor.close()


def run_specs(backend: Backend, specs: Sequence[BatchSpec], store: PredictionStore,
              emotions: Sequence[str], on_done: Callable[[int], None] | None = None) -> int:
    """Run the batches of ``specs`` that are not stored yet, one unit each; returns the calls."""
    return run_units(plan_units([(backend, specs)], store, emotions, image_major=False), store,
                     emotions, on_done)


def run_image_major(backend: Backend, specs: Sequence[BatchSpec], store: PredictionStore,
                    emotions: Sequence[str], on_done: Callable[[int], None] | None = None) -> int:
    """Every pending batch of ``specs``, those that share a first turn as one image-major unit;
    returns the calls made."""
    return run_units(plan_units([(backend, specs)], store, emotions), store, emotions, on_done)


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
    """Run every missing batch of one condition; return all rows (validated) and the calls."""
    specs = plan_condition(backend, stimulus_set, condition, options, store,
                           batch_size=batch_size, labels=labels)
    calls = run_specs(backend, specs, store, emotions, on_done)
    return store.read(specs[0].folder, emotions, n_batches=len(specs)), calls
