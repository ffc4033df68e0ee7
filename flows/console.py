"""What Prefect prints to the terminal: expected errors as the entry point's one line, not as
tracebacks.

An expected error (an :class:`~emoface.errors.EmofaceError`: a backend down, a model missing, bad
input) reaches the terminal once, as the last line the entry point prints. Without ``--debug``, the
console copies Prefect logs of it (``Task run failed with exception ...`` + traceback, ``Encountered
exception during execution``, ``Finished in state Failed``) are dropped; the records still go to the
Prefect server, so the UI shows them in full. A bug (any other exception) keeps its traceback.
"""

from __future__ import annotations

import logging

from emoface.errors import EmofaceError


def _expected(exc: BaseException | None) -> bool:
    from flows.pipeline import RunFailure  # the flow's summary of failed parts: the bug, if one
    # caused it, was logged with its traceback where it happened

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (EmofaceError, RunFailure)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class ExpectedErrorFilter(logging.Filter):
    """Drops console records that report an expected error (the entry point prints it once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _expected(record.exc_info[1]):
            return False
        if not record.name.startswith("prefect."):
            return True
        msg = record.getMessage()
        return not (msg.startswith("Finished in state Failed")
                    or (record.levelno >= logging.ERROR and " failed: " in msg
                        and "Fix the cause and run the same command again" in msg))


def quiet_expected_errors() -> None:
    """Install :class:`ExpectedErrorFilter` on the terminal handlers (call after importing
    Prefect, which configures logging on import); the API handler is left alone."""
    from prefect.logging.handlers import APILogHandler

    filt = ExpectedErrorFilter()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, APILogHandler):
                handler.addFilter(filt)
