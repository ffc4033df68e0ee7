"""Backends by name, imported lazily so the package imports without mlx or a server.

Model ids are ``backend/model``: ``simulated/gemma3-4b``, ``ollama/gemma3:4b``,
``mlx/<local path or repo id>``, ``fer/<name>``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

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

# backend name -> (module, the pip extra that provides what it imports)
BACKENDS: dict[str, tuple[str, str | None]] = {
    "simulated": ("emoface.backends.simulated", None),
    "ollama": ("emoface.backends.ollama", None),
    "mlx": ("emoface.backends.mlx", "mlx"),
    "fer": ("emoface.backends.fer", "fer"),
}

__all__ = [
    "BACKENDS", "Backend", "BackendError", "GenerationOptions", "ModelInfo",
    "PermanentBackendError", "StimulusInput", "TokenStep", "TransientBackendError", "TurnResult",
    "make_backend", "split_model_id",
]


def split_model_id(model_id: str) -> tuple[str, str]:
    backend, sep, model = model_id.partition("/")
    if not sep or not model or backend not in BACKENDS:
        raise ConfigError(
            f"model id {model_id!r} must be backend/model with backend one of: {', '.join(BACKENDS)}"
        )
    return backend, model


def _import(backend: str):
    module, extra = BACKENDS[backend]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        hint = f' (install the extra: pip install -e ".[{extra}]")' if extra else ""
        raise ConfigError(f"backend '{backend}' cannot be loaded: {err}{hint}") from None


def make_backend(
    model_id: str,
    inference: InferenceParams,
    *,
    emotions: Sequence[str],
    stimulus_set: StimulusSet | None = None,
) -> Backend:
    """Build the backend for ``model_id`` from the inference parameters."""
    backend, model = split_model_id(model_id)
    mod = _import(backend)
    return mod.build(model, inference, emotions=emotions, stimulus_set=stimulus_set)
