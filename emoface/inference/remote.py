"""Inference batches computed in another process (a Dask worker), committed by the flow process.

The split: the flow process plans a batch (its content key) and packs it into a
:class:`RemoteBatch` that carries everything the work needs, the stimuli's image bytes included,
so a worker needs no copy of ``data/``. :func:`compute_batch` runs on the worker and returns rows
and logit records (:class:`ComputedBatch`); only the flow process writes the store, atomically as
for a local batch.

Worker side:

* backends are built once per worker process and reused by every batch of that model
  (:func:`worker_backend`), so one limiter caps the calls in flight to the worker's server;
* a worker talks to its own endpoint: each backend declares the environment variables that
  override its params section on a worker (``BackendSpec.worker_env``: ``OLLAMA_HOST`` wins over
  ``inference.ollama.host``, ``OPENAI_BASE_URL`` over ``inference.openai.base_url``, and
  ``EMOFACE_<BACKEND>_CONCURRENCY`` overrides its ``concurrency``: what that machine's server
  can take);
* every row records which host served it (``served_by``: the worker address and, for a server
  backend, the server it called) and the model digest that server reported; a worker whose server reports a
  different digest than the one the batch was planned with refuses the batch
  (:class:`ModelDigestMismatch`, naming both hosts): results from different weights never mix.

Imports no Prefect and no Dask at module level (``distributed`` only to ask for the worker's
address when running inside one).
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emoface.backends import BACKENDS, Backend, ModelRef, make_backend
from emoface.backends.base import (
    BackendError,
    GenerationOptions,
    PermanentBackendError,
    StimulusInput,
)
from emoface.config import InferenceParams
from emoface.inference.conditions import Condition
from emoface.inference.runner import LogitRecord, run_batch

#: backends that own a model server or local weights, i.e. worth running on a cluster worker (they
#: declare a ``cluster_share``). The simulated raters and the FER classifier are CPU-cheap and stay
#: in the flow process.
CLUSTER_BACKENDS = tuple(name for name, s in BACKENDS.items() if s.cluster_share is not None)


class ModelDigestMismatch(PermanentBackendError):
    """Two servers report different weights for one model id; the run must stop."""


@dataclass(frozen=True)
class StimulusBytes:
    """One stimulus as it travels to a worker: its id, hash, file suffix and image bytes."""

    stimulus_id: str
    sha256: str
    suffix: str
    data: bytes


@dataclass(frozen=True)
class RemoteBatch:
    """Everything a worker needs to compute one planned batch."""

    model_id: str
    inference: InferenceParams
    emotions: tuple[str, ...]
    condition: Condition
    options: GenerationOptions
    index: int
    key: str
    stimuli: tuple[StimulusBytes, ...]
    labels: Mapping[str, str] | None
    expected_digest: str
    reference_host: str  # the server that reported expected_digest

    @property
    def label(self) -> str:
        return f"{self.model_id} | {self.condition.condition_id} b{self.index}"


@dataclass(frozen=True)
class ComputedBatch:
    """A batch's rows and logit records as returned to the flow process."""

    index: int
    key: str
    rows: list[dict]
    records: list[LogitRecord]
    served_by: str
    digest: str

    @property
    def calls(self) -> int:
        return sum(r["n_calls"] for r in self.rows)


@dataclass(frozen=True)
class ServedModel:
    """What a worker reports about a model before any batch is planned."""

    model_id: str
    digest: str
    served_by: str
    info: object  # the backend's ModelInfo (kept opaque: it only travels back to the planner)


def pack_stimuli(stimuli: Sequence[StimulusInput]) -> tuple[StimulusBytes, ...]:
    """Read the images of ``stimuli`` (in the flow process) so a worker needs no ``data/``."""
    return tuple(StimulusBytes(s.stimulus_id, s.sha256, s.image_path.suffix or ".png",
                               s.image_path.read_bytes()) for s in stimuli)


# --- worker side ----------------------------------------------------------------------------
_lock = threading.Lock()
_backends: dict[tuple[str, str], Backend] = {}
_image_dir: dict[str, Path] = {}


#: this process's Dask worker address, set by the worker plugin the flow registers
#: (``tasks/worker.py``); the library itself never imports Dask
_WORKER: dict[str, str] = {}


def set_worker_address(address: str) -> None:
    """Called once in each Dask worker process (by the worker plugin's ``setup``)."""
    _WORKER["address"] = address


def worker_address() -> str:
    """The Dask worker's address when running inside one, else this machine's host name."""
    return _WORKER.get("address") or socket.gethostname()


def worker_inference(inference: InferenceParams) -> InferenceParams:
    """The flow's inference parameters as this worker applies them (its own endpoint/capacity):
    every backend's declared ``worker_env`` variables set here override its section."""
    sections: dict = {}
    for spec in BACKENDS.values():
        update: dict = {}
        for var, field in (spec.worker_env or {}).items():
            value = os.environ.get(var)
            if not value:
                continue
            if field == "concurrency":
                try:
                    update[field] = max(1, int(value))
                except ValueError:
                    raise PermanentBackendError(
                        f"{worker_address()}: {var} must be a whole number, got "
                        f"{value!r}") from None
            else:
                update[field] = value
        if update:
            section = getattr(inference, spec.section)
            sections[spec.section] = section.model_copy(update=update)
    return inference.model_copy(update=sections) if sections else inference


def worker_backend(model_id: str, inference: InferenceParams, emotions: Sequence[str]) -> Backend:
    """The backend for ``model_id`` in this worker process, built once and reused."""
    params = worker_inference(inference)
    key = (model_id, params.model_dump_json())
    with _lock:
        if key not in _backends:
            _backends[key] = make_backend(model_id, params, emotions=emotions)
        return _backends[key]


def served_by(backend: Backend) -> str:
    """Where a row was computed: the worker address, plus the server it called (a server
    backend's ``host``)."""
    here = worker_address()
    host = getattr(backend, "host", None)
    return f"{here} {host}" if host else here


def _name_worker(err: BackendError) -> BackendError:
    """The same error (same class, so transient ones are still retried) naming this worker."""
    return type(err)(f"worker {worker_address()}: {err}")


def describe_model(model_id: str, inference: InferenceParams, emotions: Sequence[str]) -> ServedModel:
    """Ask this worker's backend for the model's provenance (contacts its server once)."""
    try:
        backend = worker_backend(model_id, inference, emotions)
        info = backend.info
    except BackendError as err:
        raise _name_worker(err) from None
    return ServedModel(info.model_id, info.digest, served_by(backend), info)


def _materialize(stimuli: Sequence[StimulusBytes]) -> list[StimulusInput]:
    """Write the carried images into a per-process folder (by content hash) and point at them."""
    with _lock:
        folder = _image_dir.get("dir")
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="emoface-worker-images-"))
            _image_dir["dir"] = folder
    out = []
    for s in stimuli:
        if hashlib.sha256(s.data).hexdigest() != s.sha256:
            raise PermanentBackendError(
                f"stimulus {s.stimulus_id}: image bytes arrived with a different sha256 than the "
                "manifest's; the flow's data/ changed during the run: run it again")
        path = folder / f"{s.sha256}{s.suffix}"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
            tmp.write_bytes(s.data)
            os.replace(tmp, path)
        out.append(StimulusInput(s.stimulus_id, path, s.sha256))
    return out


def compute_batch(batch: RemoteBatch) -> ComputedBatch:
    """Run one batch on this worker; raises :class:`ModelDigestMismatch` on different weights."""
    try:
        backend = worker_backend(batch.model_id, batch.inference, batch.emotions)
        info = backend.info
    except BackendError as err:
        raise _name_worker(err) from None
    where = served_by(backend)
    if info.digest != batch.expected_digest:
        ref = ModelRef.parse(batch.model_id)
        fix = ref.spec.same_weights_fix.format(model=ref.name)
        raise ModelDigestMismatch(
            f"{batch.model_id}: {where} reports digest {info.digest} but {batch.reference_host} "
            f"reported {batch.expected_digest}; results from different weights must not mix: {fix}")
    try:
        rows, records = run_batch(backend, _materialize(batch.stimuli), batch.condition,
                                  batch.emotions, batch.options, labels=batch.labels)
    except BackendError as err:
        raise _name_worker(err) from None
    for row in rows:
        row["served_by"] = where
    return ComputedBatch(batch.index, batch.key, rows, records, where, info.digest)


#: share of a worker's resource (named after the backend) one batch takes, as each backend
#: declares it: a worker started with ``--resources ollama=1`` runs up to 8 Ollama batches at once
#: (its backend's limiter still caps the calls to its server at the worker's concurrency); MLX
#: batches take the whole ``mlx=1``.
RESOURCE_SHARE = {name: s.cluster_share for name, s in BACKENDS.items()
                  if s.cluster_share is not None}


def batch_resources(workers: Mapping[str, Mapping], model_id: str) -> dict[str, float] | None:
    """The Dask resource a batch of ``model_id`` takes, given the scheduler's ``workers`` (as in
    ``scheduler_info()["workers"]``): its kind's share once any worker declares that kind, else
    None (any worker takes it)."""
    kind = ModelRef.parse(model_id).backend
    declared = any(kind in (w.get("resources") or {}) for w in workers.values())
    return {kind: RESOURCE_SHARE[kind]} if declared and kind in RESOURCE_SHARE else None


def eligible_workers(workers: Mapping[str, Mapping], model_id: str) -> int:
    """How many of ``workers`` can run batches of ``model_id``."""
    need = batch_resources(workers, model_id)
    if not need:
        return len(workers)
    (kind, share), = need.items()
    return sum(1 for w in workers.values() if (w.get("resources") or {}).get(kind, 0) >= share)


def cluster_backend(model_id: str) -> bool:
    """True for models whose batches go to the cluster when one is configured."""
    return ModelRef.parse(model_id).backend in CLUSTER_BACKENDS
