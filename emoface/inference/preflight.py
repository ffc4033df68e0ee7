"""Check every backend a run needs before the run starts: seconds, not a minute into the flow.

For an Ollama model: the server answers, the model is pulled, its digest and the server version
can be read (one try, a short timeout; see ``OllamaBackend.preflight``). For mlx and fer: the extra
that provides the backend is installed. Simulated models need nothing. The first problem raises an
:class:`~emoface.errors.EmofaceError` whose one-line message names the host or extra and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable

from emoface.backends import _import, make_backend, split_model_id
from emoface.config import InferenceParams


def preflight(model_ids: Iterable[str], inference: InferenceParams, *,
              emotions: Iterable[str] = ()) -> list[str]:
    """Check each distinct model id; returns the ids checked (in order)."""
    checked = []
    for model_id in dict.fromkeys(model_ids):
        backend, _ = split_model_id(model_id)
        if backend == "ollama":
            b = make_backend(model_id, inference, emotions=tuple(emotions))
            try:
                b.preflight()
            finally:
                b.close()
        elif backend in ("mlx", "fer"):
            _import(backend)  # raises "install the extra ..." when missing
        checked.append(model_id)
    return checked
