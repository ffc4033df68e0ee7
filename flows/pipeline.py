"""The Prefect flows: one flow run per invocation, a subflow for the baseline and per ablation,
tasks per inference batch and per analysis.

Imported by ``flows/ablations.py`` after it has set Prefect's environment; nothing runs at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prefect import flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE

from emoface.ablations import REGISTRY, Plan, WorkItem, baseline_ablation
from emoface.backends import Backend, make_backend
from emoface.backends.base import ServerDown
from emoface.config import Params
from emoface.inference.engine import (
    hidden_states_complete,
    plan_condition,
    plan_hidden_states,
    run_hidden_states,
)
from emoface.inference.remote import ModelDigestMismatch, cluster_backend
from emoface.inference.scheduler import Unit, plan_units, schedule, sweep, window_for
from emoface.inference.service import resolve_labels
from emoface.inference.store import HiddenStateStore, PredictionStore
from emoface.paths import DataPaths
from emoface.stimuli.datasets import build_real_faces
from emoface.stimuli.generate import generate_stimulus_set
from emoface.stimuli.store import StimulusSet, load_stimulus_set
from tasks import monitor
from tasks.analysis import analysis_task, report_task
from tasks.cluster import Cluster, ClusterError, ClusterModel
from tasks.inference import PrefectExecutor
from tasks.record import HOOKS


def server_down(err: BaseException | None) -> bool:
    """Whether ``err`` (or what caused it) is a circuit breaker's :class:`ServerDown`."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ServerDown):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


class RunFailure(RuntimeError):
    """A selected ablation did not complete; the message says which part and how to resume."""


class _Backends:
    """One backend per (model, stimulus set) for the whole run (a loaded model is reused).

    Held in ``_RUN`` for the duration of one ``ablations_flow`` call, not passed as a flow
    parameter (Prefect stores flow parameters; a loaded model is not a parameter).
    """

    def __init__(self, params: Params, data: DataPaths) -> None:
        self.params, self.data, self.cache, self.sets = params, data, {}, {}

    def stimuli(self, set_name: str) -> StimulusSet:
        """Each stimulus set loaded (and its image hashes verified) once per run."""
        if set_name not in self.sets:
            self.sets[set_name] = load_stimulus_set(self.data.stimulus_set(set_name),
                                                    self.params.study)
        return self.sets[set_name]

    def get(self, model_id: str, set_name: str, *, remote: bool = True) -> Backend:
        """The model's backend; with a cluster (``--dask``), Ollama/MLX prediction batches get a
        :class:`~tasks.cluster.ClusterModel` whose provenance comes from a worker."""
        cluster = _RUN.get("cluster")
        if remote and cluster is not None and cluster_backend(model_id):
            key = (model_id, "cluster")
            if key not in self.cache:
                self.cache[key] = cluster.model(model_id, self.params.inference,
                                                self.params.study.emotions)
            return self.cache[key]
        key = (model_id, set_name)
        if key not in self.cache:
            from emoface.results.imported import build_or_stand_in

            # a model that cannot run here but whose answers were imported: a stand-in
            self.cache[key] = build_or_stand_in(
                model_id, lambda: make_backend(model_id, self.params.inference,
                                               emotions=self.params.study.emotions,
                                               stimulus_set=self.stimuli(set_name)),
                self.data.root)
        return self.cache[key]

    def close(self) -> None:
        for b in self.cache.values():
            b.close()


# Tasks whose inputs include a live backend or whose work the stores decide are never cached by
# Prefect (NO_CACHE): hashing a loaded model raises HashError, and a cached "done" would hide a
# stimulus set or hidden-state batch deleted since.
@task(name="stimuli", task_run_name="stimuli {name}", cache_policy=NO_CACHE, **HOOKS)
def stimuli_task(params: Params, data_root: str, name: str) -> int:
    """Make sure the stimulus set exists (the embedded one is generated, as the DVC stage does)."""
    data = DataPaths(Path(data_root))
    paths = data.stimulus_set(name)
    if not paths.manifest.exists():
        if name == params.stimuli.set_name == "embedded":  # never over a user's own set's name
            generate_stimulus_set(params.study, params.stimuli, paths)
        elif name == params.real_faces.name:
            build_real_faces(params, data)
        else:
            raise RunFailure(f"stimulus set '{name}' not found at {paths.root}; import it "
                             "(emoface stimuli import) or `dvc pull` it (README: your own "
                             "stimuli)")
    return load_stimulus_set(paths, params.study).manifest.height


@task(name="hidden-states", task_run_name="hidden states {item.model_id}", cache_policy=NO_CACHE,
      **HOOKS)
def hidden_task(backend: Backend, item: WorkItem, params: Params, data_root: str) -> int:
    ss = load_stimulus_set(DataPaths(Path(data_root)).stimulus_set(item.stimulus_set),
                           params.study)
    files = run_hidden_states(backend, ss, HiddenStateStore(Path(data_root)),
                              params.study.emotions, batch_size=params.inference.batch_size)
    return len(files)


def run_items(items: list[WorkItem], backends: _Backends, params: Params, data: DataPaths,
              context: str) -> int:
    """Run the work items' missing batches through the scheduler; returns the backend calls
    made. Batches are planned and verified once; those of one model that share a first turn
    run image-major as one task; each batch is a Prefect task (or, with a cluster, computed on
    a worker) and committed as it finishes. Work items that need another's committed
    predictions (:attr:`WorkItem.depends_on`: text-only with the model's own labels) are
    planned once those are committed."""
    logger = get_run_logger()
    store = PredictionStore(data.root)
    calls = 0
    for item in items:
        if item.kind != "hidden":
            continue
        backend = backends.get(item.model_id, item.stimulus_set, remote=False)
        hplan = plan_hidden_states(backend, backends.stimuli(item.stimulus_set),
                                   HiddenStateStore(data.root), params.study.emotions,
                                   batch_size=params.inference.batch_size)
        if not hidden_states_complete(hplan, HiddenStateStore(data.root)):
            monitor.expect(1)
            n = hidden_task(backend, item, params, str(data.root))
            logger.info("%s: hidden states of %s: %d layer files", context, item.model_id, n)
            monitor.finished(f"hidden states {item.model_id}", None)
    predictions = [i for i in items if i.kind == "predictions"]
    for phase in ([i for i in predictions if i.depends_on is None],
                  [i for i in predictions if i.depends_on is not None]):
        calls += _run_phase(phase, backends, params, data, store, context)
    for item in predictions:
        logger.info("%s: %s done", context, item.label)
    return calls


def _run_phase(items: list[WorkItem], backends: _Backends, params: Params, data: DataPaths,
               store: PredictionStore, context: str) -> int:
    units = _units([_plan_item(item, backends, params, store) for item in items], store,
                   params.study.emotions)
    remote, units = _split_remote(units)
    calls = 0
    if remote:  # computed on the workers, committed here
        calls += _run_cluster().run_units(remote, store, params.inference,
                                          params.study.emotions, context)
    if units:
        calls += _schedule_here(units, store, PrefectExecutor(str(data.root),
                                                              params.study.emotions, context))
    return calls


def _plan_item(item: WorkItem, backends: _Backends, params: Params,
               store: PredictionStore) -> tuple[Backend, list]:
    """(backend, planned batches) of one prediction work item."""
    backend = backends.get(item.model_id, item.stimulus_set)
    ss = backends.stimuli(item.stimulus_set)
    labels = resolve_labels(item.condition, ss, store, backend.info.model_id,
                            params.study.emotions)
    return backend, plan_condition(backend, ss, item.condition,
                                   item.condition.options(params.inference), store,
                                   batch_size=params.inference.batch_size, labels=labels)


def _is_remote(backend) -> bool:
    """The run's one decision of where work runs: with ``--dask`` a model the workers serve has a
    :class:`~tasks.cluster.ClusterModel` backend (:meth:`_Backends.get`), whose batches are
    computed on a worker and committed here; every other batch runs in this process as a
    Prefect task."""
    return isinstance(backend, ClusterModel)


def _split_remote(units: list[Unit]) -> tuple[list[Unit], list[Unit]]:
    """(computed on the cluster, run here) of ``units``."""
    return ([u for u in units if _is_remote(u.backend)],
            [u for u in units if not _is_remote(u.backend)])


def _units(work: list, store: PredictionStore, emotions) -> list[Unit]:
    """The scheduler's units of (backend, specs) work: image-major in this process, one batch
    per unit on the cluster (remote units first)."""
    return (plan_units([w for w in work if _is_remote(w[0])], store, emotions, image_major=False)
            + plan_units([w for w in work if not _is_remote(w[0])], store, emotions))


class _PlanWork:
    """The prediction batches of the whole plan that can run before any subflow (their stimulus
    set is present), deduplicated, in plan order, as the scheduler's units. A text-only
    work item that needs another's predictions (:attr:`WorkItem.depends_on`: text-only with the
    model's own labels) waits until every batch of those is committed; it then joins the queue
    (:meth:`ready`)."""

    def __init__(self, items: list[WorkItem], backends: _Backends, params: Params,
                 data: DataPaths) -> None:
        self.backends, self.params, self.data = backends, params, data
        self.store = PredictionStore(data.root)
        self.committed: set[str] = set()
        self.waiting: list[tuple[WorkItem, set[str]]] = []  # (item, batch keys it waits for)
        planned: dict[tuple, list] = {}
        work = []
        for item in dict((i.key, i) for i in items if i.kind == "predictions"
                         and data.stimulus_set(i.stimulus_set).manifest.exists()).values():
            if item.depends_on is not None:
                needed = planned.get(item.depends_on.key)
                if needed is not None:  # else its ablation's subflow runs it once that is done
                    self.waiting.append((item, {s.key for s in needed if not self.store.is_done(
                        s.folder, s.index, s.key)}))
                continue
            planned[item.key] = self._plan(item)
            work.append((self.backends.get(item.model_id, item.stimulus_set), planned[item.key]))
        self.units = self._units(work) + self.ready()  # + those whose inputs were complete

    def _plan(self, item: WorkItem) -> list:
        return _plan_item(item, self.backends, self.params, self.store)[1]

    def _units(self, work: list) -> list[Unit]:
        return _units(work, self.store, self.params.study.emotions)

    def ready(self, finished: Unit | None = None) -> list[Unit]:
        """After ``finished`` was committed: the waiting items whose inputs are now complete
        (every batch of them that was missing when planned is committed)."""
        if finished is not None:
            self.committed.update(s.key for s in finished.specs)
        out = []
        for entry in list(self.waiting):
            item, needs = entry
            if needs <= self.committed:
                self.waiting.remove(entry)
                out.append((self.backends.get(item.model_id, item.stimulus_set),
                            self._plan(item)))
        return self._units(out) if out else []


@flow(name="inference", flow_run_name="inference | {models_label}")
def inference_flow(items: list[WorkItem], params: Params, data_root: str, models_label: str) -> int:
    """Every prediction batch of the plan through one window, so the server never idles while
    an ablation's last batches finish or the next one is planned: in this process as Prefect
    tasks, and Ollama/MLX batches on the cluster with ``--dask``. The baseline and ablation
    subflows that follow find these batches stored and run only what is left (hidden states, a
    set built later). A batch that fails here is not final: the subflow of the ablation that
    needs it runs it again and reports it there."""
    logger = get_run_logger()
    data = DataPaths(Path(data_root))
    store = PredictionStore(data.root)
    here = PrefectExecutor(data_root, params.study.emotions, "inference")
    calls = 0  # on the cluster; here.calls: in this process (each counted once committed)
    try:
        plan = _PlanWork(items, _run_backends(), params, data)
        with monitor.subflow_progress("inference"):
            remote, local = _split_remote(plan.units)
            if remote:
                cluster = _run_cluster()
                before = cluster.calls
                try:
                    cluster.run_units(remote, store, params.inference, params.study.emotions,
                                      "inference", more=plan.ready)
                finally:
                    calls += cluster.calls - before
            if local:
                _schedule_here(local, store, here, more=plan.ready)
    except (ModelDigestMismatch, ClusterError):
        raise
    except Exception as err:  # noqa: BLE001 - each ablation's subflow retries and reports it
        if server_down(err):
            raise  # a server found down by its circuit breaker ends the run
        logger.warning("inference stopped (%s); each ablation now runs its own batches "
                       "and reports any failure", err)
    return calls + here.calls


def _schedule_here(units: list[Unit], store: PredictionStore, executor: PrefectExecutor,
                   more=None) -> int:
    """Units as Prefect tasks of this flow run, through the scheduler's window."""
    sweep(units, store)
    monitor.expect(sum(len(u.specs) for u in units))
    window, room = window_for(units)

    def joined(finished: Unit) -> list[Unit]:
        new = _split_remote(more(finished))[1]
        sweep(new, store)
        monitor.expect(sum(len(u.specs) for u in new))
        return new

    return schedule(units, executor, window=window, room=room,
                    more=joined if more is not None else None)


_RUN: dict = {}  # "backends": _Backends, "cluster": Cluster (with --dask) for one flow run


def _run_backends() -> _Backends:
    """This run's backends. The flow bodies call this instead of reading ``_RUN``: Prefect sends
    a flow's function by value with each task on a Dask worker, and ``_RUN`` holds live
    connections that must not travel with it."""
    return _RUN["backends"]


def _run_cluster() -> Cluster:
    """This run's cluster connection (never read ``_RUN`` in a flow body: see above)."""
    return _RUN["cluster"]


_BASELINE_ID = baseline_ablation().id  # its subflow's name (Prefect names a flow when defined)


@flow(name=_BASELINE_ID, flow_run_name=f"{_BASELINE_ID} | {{models_label}}")
def baseline_flow(items: list[WorkItem], params: Params, data_root: str, models_label: str) -> int:
    """The baseline's inference (its analysis runs as a task of the whole run, before the
    ablations' subflows)."""
    with monitor.subflow_progress(_BASELINE_ID):
        return run_items(items, _run_backends(), params, DataPaths(Path(data_root)), _BASELINE_ID)


@flow(name="ablation", flow_run_name="{ablation_id} {name}")
def ablation_flow(ablation_id: str, name: str, items: list[WorkItem], params: Params,
                  data_root: str, models: list[str], inference: bool, analyses: bool) -> dict:
    calls = 0
    if inference:
        for s in sorted({i.stimulus_set for i in items}):
            stimuli_task(params, data_root, s)
        with monitor.subflow_progress(f"{ablation_id} {name}"):
            calls = run_items(items, _run_backends(), params, DataPaths(Path(data_root)),
                              ablation_id)
    summary = {"ablation": ablation_id, "calls": calls}
    if analyses:
        summary.update(analysis_task(ablation_id, params, data_root, models, items))
    return summary


@flow(name="ablations", flow_run_name="{selection}")
def ablations_flow(plan: Plan, params: Params, data_root: str, selection: str,
                   inference: bool = True, analyses: bool = True) -> dict:
    """The whole selection: stimuli, baseline, each ablation in the plan's order, the report.

    The run is renamed ``<selection> | <UTC start> | <invocation or DVC experiment>`` and tagged
    (code commit, selection, tier, DVC experiment); its subflows inherit the tags."""
    with tags(*_label_run(selection)):
        return _ablations(plan, params, data_root, selection, inference, analyses)


def _label_run(selection: str) -> list[str]:
    """Name and tag the current flow run (the API call is best effort: a run is never failed
    for its label); returns the tags for the subflows."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        monitor.adopt_invocation(list(ctx.flow_run.tags))
    run_tags = monitor.run_tags(selection)
    if ctx is not None and ctx.flow_run is not None:
        try:
            with get_client(sync_client=True) as client:
                client.update_flow_run(ctx.flow_run.id, name=monitor.run_name(selection),
                                       tags=sorted(set(ctx.flow_run.tags) | set(run_tags)))
        except Exception as err:  # noqa: BLE001 - labels only
            get_run_logger().warning("could not tag the flow run: %s", err)
    return run_tags


@contextmanager
def _this_run(params: Params, data: DataPaths, inference: bool) -> Iterator[None]:
    """This run's backends and (with ``--dask``) its cluster connection in ``_RUN`` for the flow
    bodies, released however the run ends."""
    with ExitStack() as stack:
        _RUN["backends"] = _Backends(params, data)
        stack.callback(lambda: _RUN.pop("backends").close())
        if params.execution.dask and inference:
            _RUN["cluster"] = stack.enter_context(Cluster(params.execution))
            stack.callback(_RUN.pop, "cluster", None)
        yield


def _ablations(plan: Plan, params: Params, data_root: str, selection: str, inference: bool,
               analyses: bool) -> dict:
    logger = get_run_logger()
    data = DataPaths(Path(data_root))
    failures, summaries, by_flow = [], [], {}  # by_flow: backend calls made in each subflow
    work = plan.analyses(params)  # the baseline's first
    base = work[_BASELINE_ID]
    with _this_run(params, data, inference):
        if inference:
            stimuli_task(params, data_root, params.stimuli.set_name)
            every = [i for items in work.values() for i in items]
            by_flow["inference"] = inference_flow(every, params, data_root, ",".join(plan.models))
            by_flow[_BASELINE_ID] = baseline_flow(base, params, data_root, ",".join(plan.models))
        if analyses:
            summaries.append(analysis_task(_BASELINE_ID, params, data_root, plan.models, base))
        for aid in plan.ablations:
            try:
                s = ablation_flow(aid, REGISTRY[aid].name, plan.per_ablation[aid], params,
                                  data_root, plan.models, inference, analyses)
                by_flow[aid] = s["calls"]
                summaries.append(s)
            except (ModelDigestMismatch, ClusterError):
                raise  # different weights / no cluster: no later ablation may run either
            except Exception as err:  # noqa: BLE001 - every ablation gets its chance; reported below
                if server_down(err):
                    raise  # no later ablation can reach that server either: stop now
                logger.error("%s failed: %s", aid, err)
                failures.append({"ablation": aid, "error": str(err)})
        if analyses:
            files = [str(data.stimulus_set(params.stimuli.set_name).manifest),
                     str(data.stimulus_set(params.stimuli.set_name).norms)]
            report_task(data_root, plan.ablations, files, params.analysis.alpha)
    result = {"calls": sum(by_flow.values()), "calls_by_flow": by_flow, "ablations": summaries,
              "failures": failures}
    if failures:
        raise RunFailure("; ".join(f"{f['ablation']}: {f['error']}" for f in failures))
    return result
