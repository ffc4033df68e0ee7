"""Backends by name, imported lazily so the package imports without mlx or a server.

Model ids are ``backend/model``: ``simulated/gemma3-4b``, ``ollama/gemma3:4b``,
``mlx/<local path or repo id>``, ``fer/<name>``, ``openai/<served model name>``. An id is parsed
once into a :class:`ModelRef` (backend, name, options); nothing else splits the string.

Every backend *declares* what the rest of the code asks about it (:class:`BackendSpec`: its id
pattern, its ``inference.<section>`` in params.yaml, concurrency and timeout, its cluster resource
and the worker environment variables that override its endpoint, its preflight, whether it rates
with digits read from log-probabilities and whether it gives hidden states). Its line in
:data:`BACKENDS` is the only place outside its own module that names it (a test checks this;
``emoface/config.py`` holds each backend's params section model, see tests/backends/test_registry_fitness.py).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from emoface.backends.base import (
    Backend,
    BackendError,
    GenerationOptions,
    ModelInfo,
    PermanentBackendError,
    StimulusInput,
    TokenStep,
    TransientBackendError,
    TurnResult,
)
from emoface.errors import ConfigError

if TYPE_CHECKING:
    from emoface.config import InferenceParams
    from emoface.stimuli.store import StimulusSet


@dataclass(frozen=True)
class BackendSpec:
    """What a backend declares about itself (read without importing its module)."""

    module: str
    #: the pip extra that provides what the module imports (None: always installed)
    extra: str | None = None
    #: regex the part after ``backend/`` must match
    id_pattern: str = r".+"
    #: the section of ``inference`` in params.yaml with its settings (None: it has none)
    section: str | None = None
    #: before a run: "server" = build it and call its ``preflight()``; "import" = the extra loads
    preflight: Literal["server", "import", "none"] = "none"
    #: seconds per call assumed by the dry run before any call was measured here
    default_latency_s: float = 1.0
    #: share of a Dask worker's resource named after the backend one batch takes; None = its
    #: batches stay in the flow process (cheap CPU work)
    cluster_share: float | None = None
    #: environment variables a Dask worker reads to override its section: {VAR: field}
    worker_env: Mapping[str, str] | None = None
    #: what to run when two servers report different weights for one id ({model} is filled in)
    same_weights_fix: str = "use the same model files on both"
    #: digits come from a top-k log-probability list (True) rather than exact full-vocabulary
    #: values or not at all
    digits_from_logprobs: bool = False
    hidden_states: bool = False
    #: the client library whose version goes in the report's provenance
    client_package: str | None = None
    #: the name may end in ``@option-option`` (``ModelRef.options``)
    id_options: bool = False
    #: conversations in flight when its section sets no ``concurrency``/``capacity``
    default_concurrency: int = 1


# backend name -> its declaration; the one line per backend outside its module
BACKENDS: dict[str, BackendSpec] = {
    "simulated": BackendSpec("emoface.backends.simulated", section="simulated",
                             default_latency_s=0.0005, default_concurrency=8),
    "ollama": BackendSpec("emoface.backends.ollama", section="ollama", preflight="server",
                          default_latency_s=3.0, cluster_share=0.125,
                          worker_env={"OLLAMA_HOST": "host",
                                      "EMOFACE_OLLAMA_CONCURRENCY": "concurrency"},
                          same_weights_fix="run `ollama pull {model}` on both so they serve the "
                                           "same weights",
                          digits_from_logprobs=True, client_package="ollama"),
    "mlx": BackendSpec("emoface.backends.mlx", "mlx", section="mlx", preflight="import",
                       default_latency_s=2.0, cluster_share=1.0, hidden_states=True,
                       id_options=True),
    "fer": BackendSpec("emoface.backends.fer", "fer", preflight="import", default_latency_s=0.002),
    "openai": BackendSpec("emoface.backends.openai_compat", id_pattern=r"\S.*", section="openai",
                          preflight="server", default_latency_s=1.0, cluster_share=0.125,
                          worker_env={"OPENAI_BASE_URL": "base_url",
                                      "EMOFACE_OPENAI_CONCURRENCY": "concurrency"},
                          same_weights_fix="serve the same model files, server version and "
                                           "max_model_len on both",
                          digits_from_logprobs=True, client_package="openai"),
}

__all__ = [
    "BACKENDS", "Backend", "BackendError", "BackendSpec", "GenerationOptions", "ModelInfo",
    "ModelRef", "PermanentBackendError", "StimulusInput", "TokenStep", "TransientBackendError",
    "TurnResult", "backend_concurrency", "backend_timeout_s", "make_backend", "model_id_pattern",
    "split_model_id",
]


def model_id_pattern() -> str:
    """One regex for every valid model id (config.py validates ``models.*`` with it)."""
    return "^(?:" + "|".join(f"{re.escape(n)}/(?:{s.id_pattern})" for n, s in BACKENDS.items()) + ")$"


@dataclass(frozen=True)
class ModelRef:
    """A model id parsed once: ``backend/name[@option-option...]``.

    ``options`` are the ``@``-suffix parts of an mlx id (A4's self-quantized arm,
    ``mlx/<fp16>@q4-g64`` -> ``("q4", "g64")``); other backends take the name as it is."""

    backend: str
    name: str
    options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, model_id: str) -> ModelRef:
        backend, sep, name = model_id.partition("/")
        spec = BACKENDS.get(backend)
        if not sep or not name or spec is None or not re.fullmatch(spec.id_pattern, name):
            raise ConfigError(f"model id {model_id!r} must be backend/model with backend one of: "
                              f"{', '.join(BACKENDS)}")
        options: tuple[str, ...] = ()
        if spec.id_options and "@" in name:
            options = tuple(name.rpartition("@")[2].split("-"))
        return cls(backend, name, options)

    @property
    def id(self) -> str:
        return f"{self.backend}/{self.name}"

    @property
    def spec(self) -> BackendSpec:
        return BACKENDS[self.backend]

    def section(self, inference: InferenceParams) -> Any:
        """This backend's settings in ``inference`` (None when it has no section)."""
        return getattr(inference, self.spec.section) if self.spec.section else None

    def __str__(self) -> str:
        return self.id


def split_model_id(model_id: str) -> tuple[str, str]:
    """``(backend, model)`` of an id (kept for callers; prefer :meth:`ModelRef.parse`)."""
    ref = ModelRef.parse(model_id)
    return ref.backend, ref.name


def backend_concurrency(model_id: str, inference: InferenceParams) -> int:
    """Conversations in flight at once against one server of this model (dry-run estimate)."""
    ref = ModelRef.parse(model_id)
    section = ref.section(inference)
    value = (getattr(section, "concurrency", None) or getattr(section, "capacity", None)
             if section is not None else None)
    return int(value) if value else ref.spec.default_concurrency


def backend_timeout_s(model_id: str, inference: InferenceParams, default: float = 300.0) -> float:
    """The per-request timeout of this model's backend (``default`` when it has none)."""
    section = ModelRef.parse(model_id).section(inference)
    return float(getattr(section, "timeout_s", None) or default)


def _import(backend: str):
    spec = BACKENDS[backend]
    try:
        return importlib.import_module(spec.module)
    except ImportError as err:
        hint = f' (install the extra: pip install -e ".[{spec.extra}]")' if spec.extra else ""
        raise ConfigError(f"backend '{backend}' cannot be loaded: {err}{hint}") from None


def make_backend(
    model_id: str | ModelRef,
    inference: InferenceParams,
    *,
    emotions: Sequence[str],
    stimulus_set: StimulusSet | None = None,
) -> Backend:
    """Build the backend for ``model_id`` from the inference parameters."""
    ref = model_id if isinstance(model_id, ModelRef) else ModelRef.parse(model_id)
    mod = _import(ref.backend)
    return mod.build(ref.name, inference, emotions=emotions, stimulus_set=stimulus_set)
