"""Inference batches on a Dask cluster, through Prefect's Dask task runner (``prefect-dask``).

``--dask ADDRESS`` / ``execution.dask``: the flow process keeps planning, the store, analyses and
the report; the *compute* half of each Ollama/MLX batch (:func:`compute_batch_task`, a Prefect
task, retried on transient errors like the local one) runs on a worker, and the *commit* half
(validation and the atomic write) runs here, in the flow process, which alone writes ``data/``.

Distribution is Dask's: this module is the scheduler's executor for the cluster
(:mod:`emoface.inference.scheduler`, one batch per unit): it sizes the window (a few batches per
worker) so every worker's server stays busy, restricts a model to workers that declared its resource
(``ollama``/``mlx``, when any worker declares it) and gives up with a clear message when no
suitable worker is present for ``execution.worker_timeout_s``. A worker that dies has its batches
re-run by Dask elsewhere; nothing reaches the store until the flow commits a whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from emoface.backends import ModelRef, backend_timeout_s
from emoface.backends.base import ModelInfo
from emoface.config import ExecutionParams, InferenceParams
from emoface.errors import EmofaceError
from emoface.inference.remote import (
    ComputedBatch,
    ModelDigestMismatch,
    RemoteBatch,
    ServedModel,
    batch_resources,
    compute_batch,
    describe_model,
    eligible_workers,
    pack_stimuli,
)
from emoface.inference.scheduler import Unit, schedule, sweep
from emoface.inference.store import PredictionStore
from tasks import monitor, progress, record
from tasks.dask_scheduler import scheduler_info
from tasks.inference import BatchFailed, batch_failed, batch_label, retry_transient_only

#: batches in flight per eligible worker: one computing, the next ones queued behind it so the
#: server never idles while a finished batch travels back and is committed.
IN_FLIGHT_PER_WORKER = 3


class ClusterError(EmofaceError):
    """The cluster cannot run the work (unreachable scheduler, no suitable worker)."""


@task(
    name="inference-batch-remote",
    task_run_name="{batch.model_id} | {batch.condition.condition_id} | remote b{batch.index}",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_transient_only,
    persist_result=False,
    cache_policy=NO_CACHE,  # the store decides what runs; image bytes need no hashing
)
def compute_batch_task(batch: RemoteBatch) -> ComputedBatch:
    """The compute half of a batch, on a Dask worker: rows and logits, nothing written."""
    return compute_batch(batch)


class ClusterModel:
    """Stands for a model served by the cluster's workers in the flow process: planning needs
    only its provenance (:attr:`info`), taken from the first worker that answered."""

    def __init__(self, served: ServedModel) -> None:
        self.served = served
        self.info: ModelInfo = served.info  # type: ignore[assignment]

    def close(self) -> None:
        """Nothing to release here: the backends live in the workers."""


class Cluster:
    """A connection to a Dask scheduler for one flow run (open it with ``with``)."""

    def __init__(self, execution: ExecutionParams) -> None:
        if not execution.dask:
            raise ValueError("Cluster needs execution.dask (a scheduler address)")
        self.address = execution.dask
        self.timeout_s = execution.worker_timeout_s
        self.runner = None
        self.calls = 0  # calls of every batch committed so far (a failed run_units included)

    def __enter__(self) -> Cluster:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ClusterError('--dask needs prefect-dask: pip install -e ".[dask]"') from None
        self.runner = DaskTaskRunner(address=self.address,
                                     client_kwargs={"timeout": f"{self.timeout_s}s"})
        try:
            self.runner.__enter__()
            self.client  # connects now, so an unreachable scheduler fails here  # noqa: B018
        except (OSError, TimeoutError) as err:
            self.runner = None
            raise ClusterError(
                f"cannot reach the Dask scheduler at {self.address} within {self.timeout_s:g} s "
                f"({type(err).__name__}); start it with `dask scheduler` on that machine, or "
                "drop --dask / execution.dask to run here") from None
        from tasks.worker import WorkerSetup

        # on every worker, present and future: no profiler where it deadlocks, imports warmed
        self.client.register_plugin(WorkerSetup())
        return self

    def __exit__(self, *exc) -> None:
        if self.runner is not None:
            self.runner.__exit__(*exc)
            self.runner = None

    @property
    def client(self):
        return self.runner.client

    # --- workers -------------------------------------------------------------------------
    def resources(self, model_id: str) -> dict[str, float] | None:
        """The resource a batch of ``model_id`` takes, when some worker declares it."""
        return batch_resources(self._workers(), model_id)

    def _workers(self) -> dict:
        return scheduler_info(self.client)["workers"]

    def eligible_workers(self, model_id: str) -> int:
        return eligible_workers(self._workers(), model_id)

    def wait_for_workers(self, model_id: str) -> int:
        """Block until a worker able to run ``model_id`` is present; fail after the timeout."""
        deadline = time.monotonic() + self.timeout_s
        while (n := self.eligible_workers(model_id)) == 0:
            if time.monotonic() > deadline:
                kind = ModelRef.parse(model_id).backend
                raise ClusterError(
                    f"no Dask worker able to run {model_id} joined {self.address} within "
                    f"{self.timeout_s:g} s; start one on each machine with its model server: "
                    f"`dask worker {self.address}` (with --resources \"{kind}=1\" when other "
                    f"workers declare {kind}), or raise execution.worker_timeout_s")
            time.sleep(0.5)
        return n

    # --- work ----------------------------------------------------------------------------
    def model(self, model_id: str, inference: InferenceParams,
              emotions: Sequence[str]) -> ClusterModel:
        """Ask one suitable worker for the model's provenance (its server's digest)."""
        self.wait_for_workers(model_id)
        fut = self.client.submit(describe_model, model_id, inference, tuple(emotions),
                                 resources=self.resources(model_id), pure=False)
        try:
            served = fut.result(timeout=self.timeout_s + backend_timeout_s(model_id, inference))
        except EmofaceError:
            raise
        except TimeoutError:
            raise ClusterError(f"no Dask worker answered for {model_id} within "
                               f"{self.timeout_s + backend_timeout_s(model_id, inference):g} s"
                               ) from None
        return ClusterModel(served)

    def run_units(self, units: Sequence[Unit], store: PredictionStore,
                  inference: InferenceParams, emotions: Sequence[str], context: str,
                  more: Callable[[Unit], list[Unit]] | None = None) -> int:
        """Compute ``units`` (one batch each, any models, in the order given) on the cluster
        through the scheduler's window and commit each here; returns the calls made.
        ``more(finished)``, asked after each commit, returns units that were waiting for it
        (they join the end of the queue)."""
        executor = _DaskExecutor(self, store, inference, emotions, context)
        sweep(units, store)
        executor.admit(units)

        def joined(finished: Unit) -> list[Unit]:
            new = more(finished) if more is not None else []
            sweep(new, store)
            executor.admit(new)
            return new

        with _api_for_workers():
            return schedule(units, executor, window=executor.window, tick=executor.tick,
                            more=joined, poll_s=2.0)


class _DaskExecutor:
    """The scheduler's units on the cluster: the compute half of a batch
    (:func:`compute_batch_task`) on a worker, the commit half here. The window is
    :data:`IN_FLIGHT_PER_WORKER` per worker able to run any of the models; when every such
    worker has left for ``worker_timeout_s``, the run ends saying so."""

    def __init__(self, cluster: Cluster, store: PredictionStore, inference: InferenceParams,
                 emotions: Sequence[str], context: str) -> None:
        self.cluster, self.store, self.inference = cluster, store, inference
        self.emotions, self.context = tuple(emotions), context
        self.resources: dict[str, dict | None] = {}
        self.prefect: dict = {}  # dask future -> its Prefect future
        self.admitted = self.finished = 0
        self.able, self.last_seen_worker = 0, time.monotonic()

    def admit(self, units: Sequence[Unit]) -> None:
        for u in units:
            if u.first.model_id not in self.resources:
                self.resources[u.first.model_id] = self.cluster.resources(u.first.model_id)
        self.admitted += len(units)
        monitor.expect(len(units))

    def window(self) -> int:
        """One scheduler call per round: the workers able to run any of the models."""
        workers = self.cluster._workers()
        self.able = max([eligible_workers(workers, m) for m in self.resources] or [0])
        return max(1, self.able) * IN_FLIGHT_PER_WORKER

    def tick(self) -> None:
        if self.able:
            self.last_seen_worker = time.monotonic()
        elif time.monotonic() - self.last_seen_worker > self.cluster.timeout_s:
            raise ClusterError(
                f"{self.context}: every Dask worker able to run {', '.join(sorted(self.resources))}"
                f" left {self.cluster.address} and none came back within "
                f"{self.cluster.timeout_s:g} s; {self.admitted - self.finished} batch(es) not run. "
                "Start a worker and run the same command again.")

    def submit(self, unit: Unit):
        from prefect_dask.task_runners import PrefectDaskFuture

        spec, model = unit.first, unit.backend
        batch = RemoteBatch(spec.model_id, self.inference, self.emotions, spec.condition,
                            spec.options, spec.index, spec.key, pack_stimuli(spec.stimuli),
                            spec.labels, model.info.digest, model.served.served_by)
        dask_future = self.cluster.client.submit(
            compute_batch_task, parameters={"batch": batch}, wait_for=None, dependencies=None,
            return_type="state", resources=self.resources[spec.model_id])
        fut = PrefectDaskFuture(wrapped_future=dask_future, task_run_id=dask_future.task_run_id)
        record.launched.add(str(fut.task_run_id))
        self.prefect[dask_future] = fut
        return dask_future

    def cancel(self, dask_future) -> None:
        dask_future.cancel()  # a failed run leaves no work behind on the workers

    def finish(self, unit: Unit, dask_future) -> int:
        """The commit half: take a computed batch and write it (flow process only)."""
        spec, fut = unit.first, self.prefect.pop(dask_future)
        self.finished += 1
        fut.wait()
        state = fut.state
        if not state.is_completed():
            try:
                state.result()
            except ModelDigestMismatch:
                raise
            except Exception as err:  # noqa: BLE001 - re-raised with where it happened
                raise batch_failed(self.context, spec, err, " on the cluster") from err
            raise BatchFailed(f"{self.context}: batch b{spec.index:04d} of {spec.model_id} "
                              f"ended {state.type.value} on the cluster; run the same command "
                              "again")
        computed: ComputedBatch = state.result()
        if computed.key != spec.key:  # never expected: a worker answers the batch it was given
            raise BatchFailed(f"{self.context}: batch b{spec.index:04d} came back for another key")
        self.store.write_batch(spec.folder, spec.index, spec.key, computed.rows, computed.records,
                               self.emotions, plan_key=spec.plan_key)
        self.cluster.calls += computed.calls
        progress.advance(len(spec.stimuli))
        monitor.finished(batch_label(spec, " (cluster)"),
                         self.store.batch_file(spec.folder, spec.index, "parquet"))
        return computed.calls


@contextmanager
def _api_for_workers() -> Iterator[None]:
    """Make the Prefect API this process reports to explicit in the context sent with each task.

    Without ``PREFECT_API_URL`` this process runs a temporary server on 127.0.0.1; workers on
    this machine can report there (their task runs then appear under the flow run as usual).
    Workers on other machines need ``PREFECT_API_URL`` pointing at a ``prefect server start``
    they can reach (README: More than one machine)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process's temporary server (a singleton)
    if not server.running:
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield
