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


def sleep(seconds: float, *, until: threading.Event | None = None) -> None:
    """``time.sleep`` that ends early: raising :class:`Interrupted` on a stop request, or
    returning once ``until`` is set."""
    deadline = time.monotonic() + max(0.0, seconds)
    while (left := deadline - time.monotonic()) > 0:
        if STOP.wait(left if until is None else min(left, 0.1)):
            raise Interrupted()
        if until is not None and until.is_set():
            return
