"""Which task runs this process launched, so the entry point can wait until the (temporary)
server has recorded every one of them before the process exits.

Prefect's server records task-run states asynchronously; at interpreter exit a temporary server
is killed mid-write and records are lost (measured: 8-11 of 200 survived). The hooks below
collect the ids client-side; ``flows/ablations.py`` polls the API for them.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
launched: set[str] = set()


def remember(task, task_run, state) -> None:  # Prefect state hook signature
    with _lock:
        launched.add(str(task_run.id))


HOOKS = {"on_completion": [remember], "on_failure": [remember]}
