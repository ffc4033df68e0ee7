"""What every HTTP backend shares: retries with backoff and jitter, ``Retry-After``, and a circuit
breaker. A backend only says which errors are which (:meth:`HttpRetries.call`'s ``classify``).

* A transient failure (connection refused/reset, timeouts, HTTP 5xx, 429) is retried up to
  ``retries`` times. The wait before retry *n* is ``backoff_s x 2^n`` plus up to ``backoff_s`` of
  jitter (capped at 30 x ``backoff_s``), or the server's ``Retry-After`` when it asked for longer
  (:class:`RateLimited`). The wait is slept with :meth:`Backend.backoff_sleep`, which leaves the
  conversation's slot of ``max_concurrency`` to another conversation meanwhile.
* A backoff ends early when the backend has a slot that no conversation is waiting for (nothing
  else would use the server's capacity) and the server is answering (fewer than
  ``EARLY_RETRY_FAILURES`` requests in a row have failed), unless the server asked to wait
  (``Retry-After``). While there is other work, every backoff is slept in full; at the end of a
  run, the last conversations do not hold it up for their backoffs of up to 30 x ``backoff_s``.
  Against a server that is down the backoff is kept, so the breaker below opens as before.
* Every failed request counts once as a request to send again (``Backend.on_retry``), the last
  attempt of an exhausted one too: the conversation is asked again later, so requests sent ==
  answers + counted retries, exactly.
* :class:`CircuitBreaker`: once ``BREAKER_FAILURES`` requests in a row have failed over at least
  ``BREAKER_SECONDS``, the server is taken to be down and every call fails at once with one
  message naming the host (a brief restart survives; 30 % random faults never come near it). A
  429 is an answer, not a failure: it neither opens nor resets the breaker.
* A permanent error (model missing, other 4xx) is raised at once, no retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from emoface.backends.base import (
    Backend,
    PermanentBackendError,
    ServerDown,
    TransientBackendError,
)

BREAKER_FAILURES = 16  # consecutive failed requests ...
BREAKER_SECONDS = 3.0  # ... spanning at least this long open the breaker
BREAKER_HOLD_S = 60.0  # an open breaker lets requests through again after this long
#: a backoff may end early (the backend idle) only while fewer requests than this in a row failed
EARLY_RETRY_FAILURES = 3
#: conversation threads per slot of ``max_concurrency`` (``Backend.threads_per_slot``): a
#: conversation sleeping in a backoff (about 1-30 x ``backoff_s``) leaves its slot, and at 30 %
#: faults with a 1 s backoff a conversation spends about 20 times longer waiting than being
#: answered, so about that many threads per slot keep every slot busy meanwhile
THREADS_PER_SLOT = 32
PREFLIGHT_TIMEOUT_S = 10.0  # a preflight's requests: one try each, at most this long
RETRY_AFTER_MAX_S = 120.0  # a Retry-After longer than this is capped (a wait, not a stall)


class RateLimited(TransientBackendError):
    """HTTP 429: the server asks to come back later (``retry_after`` seconds, when it said)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), RETRY_AFTER_MAX_S))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), RETRY_AFTER_MAX_S))


class CircuitBreaker:
    """Counts consecutive failed requests to one server; open = the server is taken to be down.

    ``server`` names it in the message ("the Ollama server"), ``fix`` says what to check. One
    breaker per host in a process (:func:`breaker_for`), shared by every backend that calls it,
    so once it opens every conversation of the run to that server, whatever model or stimulus
    set, fails at once (:class:`ServerDown`, never retried), and those sleeping in a backoff wake
    (``opened``) and fail too. In a long-lived process (a Dask worker) an open breaker closes
    again after ``hold_s``.
    """

    def __init__(self, host: str, failures: int = BREAKER_FAILURES,
                 seconds: float = BREAKER_SECONDS, *, server: str = "the server",
                 fix: str = "check that server and its log", hold_s: float = BREAKER_HOLD_S) -> None:
        self.host, self.failures, self.seconds, self.hold_s = host, failures, seconds, hold_s
        self.server, self.fix = server, fix
        self._lock = threading.Lock()
        self._run = 0
        self._since = 0.0
        self._opened_at = 0.0
        self.open_reason: str | None = None
        self.opened = threading.Event()

    def check(self) -> None:
        """Raise :class:`ServerDown` at once while open (no request is sent)."""
        reason = self.open_reason
        if reason is not None:
            if time.monotonic() - self._opened_at < self.hold_s:
                raise ServerDown(reason)
            with self._lock:  # held long enough: let requests through again
                self.open_reason, self._run = None, 0
                self.opened.clear()

    def success(self) -> None:
        with self._lock:
            self._run = 0

    def answering(self) -> bool:
        """The server answered one of the last ``EARLY_RETRY_FAILURES`` requests."""
        return self.open_reason is None and self._run < EARLY_RETRY_FAILURES

    def failure(self, err: Exception) -> None:
        """Count a failed request; open (and raise) once the server looks down."""
        now = time.monotonic()
        with self._lock:
            if self._run == 0:
                self._since = now
            self._run += 1
            if (self.open_reason is None and self._run >= self.failures
                    and now - self._since >= self.seconds):
                self.open_reason = (
                    f"{self.server} at {self.host} looks down: the last {self._run} requests "
                    f"all failed over {now - self._since:.0f} s (last: {err}); {self.fix}")
                self._opened_at = now
                self.opened.set()
        self.check()


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(host: str, *, server: str = "the server",
                fix: str = "check that server and its log") -> CircuitBreaker:
    """The process's circuit breaker for ``host`` (made on first use, by the first backend to
    call that host: its ``server`` and ``fix`` name it in the message)."""
    with _BREAKERS_LOCK:
        if host not in _BREAKERS:
            _BREAKERS[host] = CircuitBreaker(host, server=server, fix=fix)
        return _BREAKERS[host]


@contextmanager
def preflight_errors(classify: Callable[[Exception], Exception],
                     down: Callable[[Exception], str]) -> Iterator[None]:
    """A preflight's calls (one try each): a failure that would be retried in a run means the
    server does not answer, a :class:`PermanentBackendError` with ``down(err)``'s one line;
    anything else is raised as ``classify`` names it."""
    try:
        yield
    except PermanentBackendError:
        raise
    except Exception as err:  # noqa: BLE001 - classified below
        e = classify(err)
        if isinstance(e, TransientBackendError):
            raise PermanentBackendError(down(err)) from None
        raise e from None


class _Wait:
    """Exponential backoff with jitter, or the server's Retry-After when that is longer."""

    def __init__(self, backoff_s: float) -> None:
        self.exp = wait_exponential_jitter(multiplier=backoff_s, jitter=backoff_s,
                                           max=30 * max(backoff_s, 0.01))

    def __call__(self, state: RetryCallState) -> float:
        wait = self.exp(state)
        err = state.outcome.exception() if state.outcome is not None else None
        after = getattr(err, "retry_after", None)
        return max(wait, after) if after is not None else wait


class HttpRetries:
    """Retries, backoff and the circuit breaker of one backend's server."""

    def __init__(self, backend: Backend, breaker: CircuitBreaker, *, retries: int,
                 backoff_s: float) -> None:
        self.backend, self.breaker = backend, breaker
        self.retries, self.backoff_s = retries, backoff_s
        self._asked_to_wait = threading.local()  # this thread's last failure was a 429

    def _retry_early(self) -> bool:
        return self.breaker.answering() and not getattr(self._asked_to_wait, "v", False)

    def _sleep(self, seconds: float) -> None:
        self.backend.backoff_sleep(seconds, early=self._retry_early)

    def call(self, classify: Callable[[Exception], Exception], fn: Callable[..., Any],
             *args: Any, **kwargs: Any) -> tuple[Any, int]:
        """``fn(*args, **kwargs)`` with retries on transient errors; returns (result, attempts).

        ``classify`` maps an exception of the client to a :class:`TransientBackendError`, a
        :class:`PermanentBackendError` or itself (a bug: raised as is)."""
        def attempt():
            self.breaker.check()
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - classified and re-raised
                classified = classify(err)
                if isinstance(classified, TransientBackendError):
                    # every failed request is one request to make again: the last attempt too
                    # (its conversation is asked again later), so requests sent == answers +
                    # counted retries exactly
                    self.backend._count_retries(1)
                    self._asked_to_wait.v = isinstance(classified, RateLimited)
                    if not self._asked_to_wait.v:
                        self.breaker.failure(classified)
                raise classified from err
            self.breaker.success()
            return result

        retrying = Retrying(
            retry=retry_if_exception_type(TransientBackendError),
            stop=stop_after_attempt(self.retries + 1),
            wait=_Wait(self.backoff_s),
            sleep=self._sleep,
            reraise=True,
        )
        state: dict[str, RetryCallState] = {}
        for att in retrying:
            state["s"] = att.retry_state
            with att:
                result = attempt()
        return result, state["s"].attempt_number
