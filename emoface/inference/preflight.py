"""Check every backend a run needs before the run starts: seconds, not a minute into the flow.

For an Ollama model: the server answers, the model is pulled, its digest and the server version
can be read (one try, a short timeout; see ``OllamaBackend.preflight``). For mlx and fer: the extra
that provides the backend is installed. Simulated models need nothing. The first problem raises an
:class:`~emoface.errors.EmofaceError` whose one-line message names the host or extra and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from emoface.backends import _import, make_backend, split_model_id
from emoface.config import InferenceParams, normalize_host
from emoface.errors import ConfigError


def check_ollama_host_env(inference: InferenceParams) -> None:
    """``OLLAMA_HOST`` read as params.yaml's ``inference.ollama.host`` is (when that is null):
    ``host:port`` means http://, anything unparseable is refused in one line naming it."""
    env = os.environ.get("OLLAMA_HOST")
    if inference.ollama.host is None and env:
        try:
            normalize_host(env)
        except ValueError as err:
            raise ConfigError(f"OLLAMA_HOST={env!r}: {err} (or set inference.ollama.host in "
                              "params.yaml)") from None


def preflight(model_ids: Iterable[str], inference: InferenceParams, *,
              emotions: Iterable[str] = ()) -> list[str]:
    """Check each distinct model id; returns the ids checked (in order)."""
    checked = []
    for model_id in dict.fromkeys(model_ids):
        backend, _ = split_model_id(model_id)
        if backend == "ollama":
            check_ollama_host_env(inference)
            b = make_backend(model_id, inference, emotions=tuple(emotions))
            try:
                b.preflight()
            finally:
                b.close()
        elif backend in ("mlx", "fer"):
            _import(backend)  # raises "install the extra ..." when missing
        checked.append(model_id)
    return checked
