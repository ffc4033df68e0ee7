"""Inference batches on a Dask cluster, through Prefect's Dask task runner (``prefect-dask``).

``--dask ADDRESS`` / ``execution.dask``: the flow process keeps planning, the store, analyses and
the report; the *compute* half of each Ollama/MLX batch (:func:`compute_batch_task`, a Prefect
task, retried on transient errors like the local one) runs on a worker, and the *commit* half
(validation and the atomic write) runs here, in the flow process, which alone writes ``data/``.

Distribution is Dask's: this module only keeps enough batches in flight (a window per worker) so
every worker's server stays busy, restricts a model to workers that declared its resource
(``ollama``/``mlx``, when any worker declares it) and gives up with a clear message when no
suitable worker is present for ``execution.worker_timeout_s``. A worker that dies has its batches
re-run by Dask elsewhere; nothing reaches the store until the flow commits a whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from prefect import task
from prefect.tasks import exponential_backoff

from emoface.backends import ModelRef, backend_timeout_s
from emoface.backends.base import ModelInfo
from emoface.config import ExecutionParams, InferenceParams
from emoface.errors import EmofaceError
from emoface.inference.engine import BatchSpec
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
from emoface.inference.store import PredictionStore
from tasks import progress, record
from tasks.dask_scheduler import scheduler_info
from tasks.inference import retry_transient_only

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
        self.calls = 0  # calls of every batch committed so far (a failed run_specs included)

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

    def run_specs(self, work: Sequence[tuple[ClusterModel, BatchSpec]], store: PredictionStore,
                  inference: InferenceParams, emotions: Sequence[str], context: str,
                  more: Callable[[set[str]], list] | None = None) -> int:
        """Compute the missing batches of ``work`` (any models, in the order given) on the cluster
        through one window, and commit each here; returns the calls made. ``more(committed)``,
        asked after each commit with the keys committed so far, returns work that was waiting
        for those batches (it joins the end of the queue)."""
        todo = [(m, s) for m, s in work if not store.is_done(s.folder, s.index, s.key)]
        if not todo and more is not None:
            todo = more(set())
        if not todo:
            return 0
        running: dict = {}
        try:
            with _api_for_workers():
                return self._run(todo, running, store, inference, emotions, context, more)
        finally:
            for dask_future in running:  # a failed run leaves no work behind on the workers
                dask_future.cancel()


    def _run(self, work: list[tuple[ClusterModel, BatchSpec]], running: dict,
             store: PredictionStore, inference: InferenceParams, emotions: Sequence[str],
             context: str, more: Callable[[set[str]], list] | None) -> int:
        from distributed import wait
        from prefect_dask.task_runners import PrefectDaskFuture

        queue, committed, resources = [], set(), {}

        def admit(work: list[tuple[ClusterModel, BatchSpec]]) -> None:
            for _, spec in work:
                if spec.model_id not in resources:
                    resources[spec.model_id] = self.resources(spec.model_id)
            for folder in dict.fromkeys(s.folder for _, s in work):
                store.sweep(folder)  # what a killed run left there
            queue.extend(work)

        admit(work)
        calls, last_seen_worker = 0, time.monotonic()
        while queue or running:
            waiting = {s.model_id for _, s in queue} or set(resources)
            workers = self._workers()  # one scheduler call per round
            able = max(eligible_workers(workers, m) for m in waiting)
            window = max(1, able) * IN_FLIGHT_PER_WORKER  # per worker able to run any of them
            while queue and len(running) < window:
                model, spec = queue.pop(0)
                batch = RemoteBatch(spec.model_id, inference, tuple(emotions), spec.condition,
                                    spec.options, spec.index, spec.key, pack_stimuli(spec.stimuli),
                                    spec.labels, model.info.digest, model.served.served_by)
                dask_future = self.client.submit(
                    compute_batch_task, parameters={"batch": batch}, wait_for=None,
                    dependencies=None, return_type="state",
                    resources=resources[spec.model_id])
                fut = PrefectDaskFuture(wrapped_future=dask_future,
                                        task_run_id=dask_future.task_run_id)
                record.launched.add(str(fut.task_run_id))
                running[dask_future] = (spec, fut)
            try:
                with self.client.as_current():  # the runner's client is not the process default
                    done, _ = wait(list(running), timeout=2.0, return_when="FIRST_COMPLETED")
            except TimeoutError:  # none finished within the poll interval
                done = set()
            if able:
                last_seen_worker = time.monotonic()
            elif time.monotonic() - last_seen_worker > self.timeout_s:
                raise ClusterError(
                    f"{context}: every Dask worker able to run {', '.join(sorted(waiting))} left "
                    f"{self.address} and none came back within {self.timeout_s:g} s; "
                    f"{len(queue) + len(running)} batch(es) not run. Start a worker and run the "
                    "same command again.")
            for dask_future in done:
                spec, fut = running.pop(dask_future)
                made = self._commit(spec, fut, store, emotions, context)
                calls += made
                self.calls += made
                committed.add(spec.key)
            if done and more is not None:
                admit(more(committed))
        return calls

    @staticmethod
    def _commit(spec: BatchSpec, fut, store: PredictionStore, emotions: Sequence[str],
                context: str) -> int:
        """The commit half: take a computed batch and write it (flow process only)."""
        fut.wait()
        state = fut.state
        if not state.is_completed():
            try:
                state.result()
            except ModelDigestMismatch:
                raise
            except Exception as err:  # noqa: BLE001 - re-raised with where it happened
                raise BatchFailed(
                    f"{context}: batch b{spec.index:04d} of {spec.model_id} / "
                    f"{spec.condition.condition_id} [{spec.stimulus_set}] failed on the cluster: "
                    f"{err}. Fix the cause and run the same command again: finished batches are "
                    "kept and only the missing ones run.") from err
            raise BatchFailed(f"{context}: batch b{spec.index:04d} of {spec.model_id} ended "
                              f"{state.type.value} on the cluster; run the same command again")
        computed: ComputedBatch = state.result()
        if computed.key != spec.key:  # never expected: a worker answers the batch it was given
            raise BatchFailed(f"{context}: batch b{spec.index:04d} came back for another key")
        store.write_batch(spec.folder, spec.index, spec.key, computed.rows, computed.records,
                          emotions, plan_key=spec.plan_key)
        progress.advance(len(spec.stimuli))
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


class BatchFailed(EmofaceError):
    """A batch failed on the cluster; the message says which and how to resume."""
