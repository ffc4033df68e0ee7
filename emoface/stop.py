"""A run-wide stop request (set when the run is interrupted: SIGINT, SIGTERM).

Work in flight checks it: a conversation does not start once it is set, and a backoff sleep wakes
at once and gives up, so an interrupted run ends in seconds even during a long backoff. The batch
that was running is then not committed and the next run redoes it (finished batches are kept).
The entry point (``flows/ablations.py``) sets it from its signal handling; a library user may set
it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from emoface.errors import EmofaceError

STOP = threading.Event()


class Interrupted(EmofaceError):
    """The run was asked to stop; nothing is wrong with its inputs."""

    def __init__(self, message: str = "the run was interrupted") -> None:
        super().__init__(message)


def check() -> None:
    """Raise :class:`Interrupted` once a stop was requested."""
    if STOP.is_set():
        raise Interrupted()


def sleep(seconds: float, *, until: threading.Event | None = None,
          early: Callable[[], bool] | None = None) -> None:
    """``time.sleep`` that ends early: raising :class:`Interrupted` on a stop request, or
    returning once ``until`` is set or ``early()`` says so (both looked at every 0.1 s)."""
    deadline = time.monotonic() + max(0.0, seconds)
    watch = until is not None or early is not None
    while (left := deadline - time.monotonic()) > 0:
        if STOP.wait(min(left, 0.1) if watch else left):
            raise Interrupted()
        if (until is not None and until.is_set()) or (early is not None and early()):
            return
