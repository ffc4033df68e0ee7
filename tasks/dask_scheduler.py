"""Questions to a Dask scheduler (what workers it has), for the cluster loop and the dry run.

Dask lives here, in the wiring, not in the library: :mod:`emoface.inference.remote` only decides
from a plain ``{address: {"resources": ...}}`` mapping which workers can serve a model.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from emoface.inference.remote import cluster_backend, eligible_workers


def workers_per_model(address: str, model_ids: Sequence[str],
                      timeout_s: float = 10.0) -> dict[str, int] | None:
    """For a dry run: how many workers at ``address`` can run each cluster model now; None when
    the scheduler does not answer within ``timeout_s``."""
    try:
        from distributed import Client
    except ImportError:
        return None
    try:
        with Client(address, timeout=f"{timeout_s}s") as client:
            workers = scheduler_info(client)["workers"]
    except (OSError, TimeoutError):
        return None
    return {m: eligible_workers(workers, m) for m in model_ids if cluster_backend(m)}

def scheduler_info(client) -> dict:
    """The scheduler's info with every worker listed (newer ``distributed`` lists only some by
    default)."""

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        return client.scheduler_info(n_workers=-1)
    return client.scheduler_info()

