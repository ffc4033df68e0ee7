"""Check every backend a run needs before the run starts: seconds, not a minute into the flow.

Each backend declares its check (``BackendSpec.preflight``): a server backend is built and its
``preflight()`` asked (Ollama: the server answers, the model is pulled, its digest and the server
version can be read; OpenAI-compatible: the server answers, the model is served, log-probabilities
are allowed; one try each, a short timeout); a backend with an extra (mlx, fer) must import.
Simulated models need nothing. The first problem raises an :class:`~emoface.errors.EmofaceError`
whose one-line message names the host or extra and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from emoface.backends import ModelRef, _import, make_backend
from emoface.config import InferenceParams, normalize_host
from emoface.errors import ConfigError


def check_host_env(ref: ModelRef, inference: InferenceParams) -> None:
    """The environment variable a backend reads its host from (``BackendSpec.worker_env``, e.g.
    ``OLLAMA_HOST``), when its params section leaves the host null, read as params.yaml's host
    is: ``host:port`` means http://, anything unparseable is refused in one line naming it."""
    section = ref.section(inference)
    for var, key in (ref.spec.worker_env or {}).items():
        env = os.environ.get(var)
        if key != "host" or not env or section is None or getattr(section, key, None):
            continue
        try:
            normalize_host(env)
        except ValueError as err:
            raise ConfigError(f"{var}={env!r}: {err} (or set inference.{ref.spec.section}.host "
                              "in params.yaml)") from None


def preflight(model_ids: Iterable[str], inference: InferenceParams, *,
              emotions: Iterable[str] = ()) -> list[str]:
    """Check each distinct model id; returns the ids checked (in order)."""
    checked = []
    for model_id in dict.fromkeys(model_ids):
        ref = ModelRef.parse(model_id)
        if ref.spec.preflight == "server":
            check_host_env(ref, inference)
            b = make_backend(ref, inference, emotions=tuple(emotions))
            try:
                b.preflight()
            finally:
                b.close()
        elif ref.spec.preflight == "import":
            _import(ref.backend)  # raises "install the extra ..." when missing
        checked.append(model_id)
    return checked
