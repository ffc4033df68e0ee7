"""What the flow installs on every Dask worker of a ``--dask`` run (current and later ones).

:class:`WorkerSetup` is a ``distributed`` worker plugin, registered by the flow process when it
connects (``Client.register_plugin``), so a plain ``dask worker ADDRESS`` needs no flags:

* **The statistical profiler is stopped on CPython < 3.12.** A Dask worker samples every
  thread's stack with ``sys._current_frames()`` every 10 ms. On 3.11 that call can run the garbage
  collector while it holds the interpreter's thread-list lock, and a finalizer that takes another
  lock then deadlocks the process (CPython issue #106883, fixed in 3.12). Our batches run many
  request threads that make garbage quickly, so it happened here: on a loopback cluster a worker
  froze mid-run with every request thread waiting for the GIL, until the scheduler dropped it
  (five minutes later) and Dask re-ran its batches elsewhere. The profiler only feeds the Dask
  dashboard's profile page; nothing here uses it.
* **Imports are warmed** in a background thread (Prefect's task engine, the backends), so the
  first batch on a new worker does not wait for them.
"""

from __future__ import annotations

import logging
import sys
import threading

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger("emoface.worker")

#: the worker's periodic callbacks of its statistical profiler (distributed.worker.profile)
PROFILER_CALLBACKS = ("profile", "profile-cycle")


def profiler_deadlocks(version: tuple[int, ...] = tuple(sys.version_info)) -> bool:
    """True on interpreters with CPython #106883 (``sys._current_frames`` vs the GC)."""
    return tuple(version[:2]) < (3, 12)


def _warm_imports() -> None:
    import prefect.task_engine  # noqa: F401 - imported for its side effect: loaded once, early

    import emoface.inference.remote  # noqa: F401
    from emoface.backends import BACKENDS, _import

    for name, spec in BACKENDS.items():  # the server backends (no extra needed)
        if spec.cluster_share is not None and spec.extra is None:
            _import(name)


class WorkerSetup(WorkerPlugin):
    """Stops the profiler where it can deadlock and warms the imports (see the module doc)."""

    name = "emoface-worker-setup"
    idempotent = True  # registered once per scheduler; a second flow run does not re-register

    def setup(self, worker) -> None:
        from emoface.inference.remote import set_worker_address

        set_worker_address(worker.address)  # rows say which worker computed them (served_by)
        if profiler_deadlocks():
            for name in PROFILER_CALLBACKS:
                callback = worker.periodic_callbacks.pop(name, None)
                if callback is not None:
                    callback.stop()
            log.info("emoface: Dask's statistical profiler is off on this worker (Python %d.%d "
                     "can deadlock in it: CPython #106883)", *sys.version_info[:2])
        threading.Thread(target=_warm_imports, name="emoface-warm-imports", daemon=True).start()


def profiler_running(dask_worker) -> bool:
    """For ``Client.run``: whether this worker's statistical profiler is still scheduled."""
    return any(name in dask_worker.periodic_callbacks for name in PROFILER_CALLBACKS)
