"""The backend interface: one main method, :meth:`Backend.converse`.

A backend answers one conversation (a list of user turns, the image with the first turn when there
is one), carrying its own answers forward, and reports per turn the text, the generated tokens with
their top-k log-probabilities, token counts and latency. Hidden states (A9) are an optional second
capability.

Errors: :class:`TransientBackendError` (connection refused/reset, timeouts, 5xx: worth retrying)
and :class:`PermanentBackendError` (model missing, 4xx, bad request: retrying cannot help; the
message says what to do).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoface import stop
from emoface.errors import EmofaceError
from emoface.prompts import Turn


class BackendError(EmofaceError):
    """A backend call failed."""


class TransientBackendError(BackendError):
    """Worth retrying: the server may answer next time."""


class PermanentBackendError(BackendError):
    """Retrying cannot help; the message says what to run or change."""


class ServerDown(PermanentBackendError):
    """A circuit breaker found the server down: the run stops, naming the host. Never retried
    (not per call, not per batch, not per task)."""


@dataclass(frozen=True)
class GenerationOptions:
    """Sent explicitly on every request, so server defaults never leak into a run."""

    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = 64
    num_ctx: int = 4096
    top_logprobs: int = 20  # 0 = do not ask for log-probabilities

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens,
                "num_ctx": self.num_ctx, "top_logprobs": self.top_logprobs}


@dataclass(frozen=True)
class StimulusInput:
    """What a backend gets to see of a stimulus."""

    stimulus_id: str
    image_path: Path
    sha256: str


@dataclass(frozen=True)
class TokenStep:
    """One generated token, with the alternatives the backend reported.

    ``top`` holds ``(token_id, token_text, logprob)``; ``token_id`` is -1 where the backend does not
    expose ids (Ollama). ``digit_logprobs`` holds exact full-vocabulary log-probabilities of the
    digits 1..9 (space-prefixed variants merged) where the backend can compute them (mlx, simulated).
    """

    token: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()
    digit_logprobs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class TurnResult:
    text: str
    steps: tuple[TokenStep, ...] = ()
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from a KV/prompt cache
    attempts: int = 1  # calls made for this turn, retries included


@dataclass(frozen=True)
class ModelInfo:
    """Provenance stamped on every prediction row."""

    model_id: str  # backend/model, e.g. "ollama/gemma3:4b"
    backend: str
    model: str
    digest: str
    backend_version: str
    quantization: str
    simulated: bool = False
    extra: dict = field(default_factory=dict)


class Backend(ABC):
    """A model that can answer rating conversations."""

    #: how many conversations may run at once against this backend
    max_concurrency: int = 1
    #: threads per slot of the backend's conversation pool (every batch in flight shares it): > 1
    #: where a conversation can sleep in a retry backoff
    #: without its slot (:meth:`backoff_sleep`), so the others keep the server busy meanwhile
    threads_per_slot: int = 1
    #: called once per request that must be sent again (a failed request, or an answered turn of
    #: a conversation that failed later): requests sent = answers + retries, exactly. The
    #: progress bar counts them; set by whoever runs
    on_retry: Callable[[], None] | None = None
    #: set when waiting for a retry is pointless (e.g. the server was found down)
    wake: threading.Event | None = None
    _limiter_lock = threading.Lock()
    _count_lock = threading.Lock()  # the slot counts below, of every backend
    _waiting = 0  # conversations waiting for a slot
    _in_use = 0  # slots held

    @property
    def limiter(self) -> threading.BoundedSemaphore:
        """Caps conversations in flight at ``max_concurrency`` across every batch using this
        backend, so a batch can start while the previous one is being validated and written."""
        with Backend._limiter_lock:
            if getattr(self, "_limiter", None) is None:
                self._limiter = threading.BoundedSemaphore(max(1, self.max_concurrency))
        return self._limiter

    def _slots_held(self) -> threading.local:
        with Backend._limiter_lock:
            if getattr(self, "_held", None) is None:
                self._held = threading.local()
        return self._held

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``max_concurrency`` slots for a conversation (see :meth:`backoff_sleep`)."""
        self._take_slot()
        held = self._slots_held()
        held.n = getattr(held, "n", 0) + 1
        try:
            yield
        finally:
            held.n -= 1
            self._give_slot()

    def _take_slot(self) -> None:
        with Backend._count_lock:
            self._waiting += 1
        try:
            self.limiter.acquire()
        except BaseException:
            with Backend._count_lock:
                self._waiting -= 1
            raise
        with Backend._count_lock:  # one step: a taker counts as waiting until it holds the slot
            self._waiting -= 1
            self._in_use += 1

    def _give_slot(self) -> None:
        with Backend._count_lock:
            self._in_use -= 1
        self.limiter.release()

    def idle(self) -> bool:
        """Whether a slot is free that no conversation is waiting for: nothing would use the
        server's capacity if a conversation sleeping in a backoff took it now."""
        with Backend._count_lock:
            return self._waiting == 0 and self._in_use < max(1, self.max_concurrency)

    def _count_retries(self, n: int) -> None:
        """``n`` requests must be sent again (a failed one, or the answered turns of a
        conversation lost with it): tell whoever counts them (:attr:`on_retry`)."""
        if self.on_retry is not None:
            for _ in range(n):
                self.on_retry()

    def backoff_sleep(self, seconds: float, early: Callable[[], bool] | None = None) -> None:
        """Sleep before a retry without holding this thread's slot, so a waiting conversation can
        use the server meanwhile; the slot is taken back before the retry.

        With ``early`` (the caller's judgement that the server is answering), the sleep ends as
        soon as ``early()`` holds while the backend is :meth:`idle`: a backoff gives the server's
        capacity to other work, and when there is none left (the end of a run, when the last
        conversations would otherwise hold everything up) retrying now takes nothing from anyone."""
        held = getattr(self._slots_held(), "n", 0) > 0
        if held:
            self._give_slot()
        try:
            # wakes (and raises Interrupted) when the run is interrupted, and returns early when
            # ``wake`` is set (the server was found down: the retry then fails at once)
            stop.sleep(seconds, until=self.wake,
                       early=None if early is None else (lambda: self.idle() and early()))
        finally:
            if held:
                self._take_slot()

    def preflight(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Check quickly (seconds, no retries) that the backend can serve this model; raise
        :class:`PermanentBackendError` saying what to do when it cannot."""

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Model id, digest, versions, quantization (may contact the server once)."""

    @abstractmethod
    def converse(
        self,
        stimulus: StimulusInput | None,
        turns: Sequence[Turn],
        options: GenerationOptions,
        *,
        json_schema: dict | None = None,
    ) -> list[TurnResult]:
        """Answer ``turns`` in order, each answer kept in the context of the next.

        ``stimulus`` is None for text-only conversations; otherwise its image goes with the first
        turn whose ``with_image`` is set. ``json_schema`` constrains the output format where the
        backend supports it (single-shot).
        """

    def hidden_states(self, stimulus: StimulusInput, prompt: str) -> dict[str, np.ndarray]:
        """Per-layer hidden states for one image: ``{"image_pool": (L, d), "last_token": (L, d)}``.

        ``image_pool`` is the mean over the image tokens, ``last_token`` the last prompt token.
        """
        raise PermanentBackendError(f"{self.info.model_id}: this backend cannot return hidden states")

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections or model memory."""
