"""Ollama backend, through the official ``ollama`` Python client.

* The image goes with the first user turn (``images=[path]``); each answer is appended as an
  assistant message before the next question (context-carry).
* Every request states ``temperature``, ``seed``, ``num_predict`` and ``num_ctx`` explicitly, so the
  server's defaults (temperature 0.8, a 2048/4096-token context) never leak into a run.
* Single-shot sends ``format=<JSON schema>``; log-probabilities use ``logprobs=True,
  top_logprobs<=20`` (the server's cap).
* The model digest comes from ``/api/tags`` and the server version from ``/api/version`` (the client
  has no method for it, so it is read with the client's own HTTP session); both go on every row.
* Transient failures (connection refused/reset, timeouts, HTTP 5xx) are retried with exponential
  backoff and jitter (tenacity); the sleep before a retry does not hold the conversation's slot, so
  other conversations keep the server busy. Permanent ones (model not pulled, other 4xx) fail at
  once and say what to run.
* A circuit breaker stops the run when the server is down: once ``BREAKER_FAILURES`` requests in a
  row have failed over at least ``BREAKER_SECONDS``, every call fails at once with one message
  naming the host (a brief restart survives; 30 % random faults never come near it).
* :meth:`OllamaBackend.preflight` checks in seconds, without retries, that the server answers and
  has the model (the flow calls it for every model before it starts).
* The host is ``inference.ollama.host`` or, when that is null, ``OLLAMA_HOST`` as the client reads it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import httpx
import ollama
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from emoface.backends.base import (
    Backend,
    GenerationOptions,
    ModelInfo,
    PermanentBackendError,
    ServerDown,
    StimulusInput,
    TokenStep,
    TransientBackendError,
    TurnResult,
)
from emoface.prompts import Turn

_TRANSIENT_HTTPX = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
BREAKER_FAILURES = 16  # consecutive failed requests ...
BREAKER_SECONDS = 3.0  # ... spanning at least this long open the breaker
BREAKER_HOLD_S = 60.0  # an open breaker lets requests through again after this long
PREFLIGHT_TIMEOUT_S = 10.0


class CircuitBreaker:
    """Counts consecutive failed requests to one server; open = the server is taken to be down.

    One breaker per host in a process (:func:`breaker_for`), shared by every backend that calls
    it, so once it opens every conversation of the run to that server, whatever model or
    stimulus set, fails at once, and those sleeping in a backoff wake (``opened``) and fail too.
    In a long-lived process (a Dask worker) an open breaker closes again after ``hold_s``.
    """

    def __init__(self, host: str, failures: int = BREAKER_FAILURES,
                 seconds: float = BREAKER_SECONDS, hold_s: float = BREAKER_HOLD_S) -> None:
        self.host, self.failures, self.seconds, self.hold_s = host, failures, seconds, hold_s
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
                    f"the Ollama server at {self.host} looks down: the last {self._run} requests "
                    f"all failed over {now - self._since:.0f} s (last: {err}); check that server "
                    "(`ollama serve`, its log)")
                self._opened_at = now
                self.opened.set()
        self.check()


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(host: str) -> CircuitBreaker:
    """The process's circuit breaker for ``host`` (made on first use)."""
    with _BREAKERS_LOCK:
        if host not in _BREAKERS:
            _BREAKERS[host] = CircuitBreaker(host)
        return _BREAKERS[host]


def _quantization(details: object) -> str:
    level = getattr(details, "quantization_level", None) if details is not None else None
    return str(level) if level else "unknown"


class OllamaBackend(Backend):
    threads_per_slot = 8  # conversations sleeping in a backoff leave their slot to others

    def __init__(self, model: str, *, host: str | None, concurrency: int, timeout_s: float,
                 retries: int, backoff_s: float) -> None:
        self.model = model
        self.client = ollama.Client(host=host, timeout=timeout_s)
        self.host = str(self.client._client.base_url)
        self.max_concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.breaker = breaker_for(self.host)
        self.wake = self.breaker.opened  # a backoff sleep ends when the server is found down
        self._info: ModelInfo | None = None

    # --- errors and retries ---------------------------------------------------------------
    def _classify(self, err: Exception) -> Exception:
        if isinstance(err, ollama.ResponseError):
            code = err.status_code
            if code == 404 or "not found" in str(err.error).lower():
                return PermanentBackendError(
                    f"ollama/{self.model}: model not found on {self.host} ({err.error}); "
                    f"run `ollama pull {self.model}` on that server")
            if code >= 500 or code == -1:
                return TransientBackendError(f"ollama/{self.model}: server error {code}: {err.error}")
            return PermanentBackendError(f"ollama/{self.model}: request rejected ({code}): {err.error}")
        if isinstance(err, (ConnectionError, *_TRANSIENT_HTTPX)):
            return TransientBackendError(
                f"ollama/{self.model}: cannot reach {self.host} ({type(err).__name__}: {err}); "
                "is `ollama serve` running there (OLLAMA_HOST)?")
        return err

    def _call(self, fn, *args, **kwargs):
        """Call the client with retries on transient errors; returns (result, attempts)."""
        def attempt():
            self.breaker.check()
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - classified and re-raised
                classified = self._classify(err)
                if isinstance(classified, TransientBackendError):
                    self.breaker.failure(classified)
                raise classified from err
            self.breaker.success()
            return result

        def count_retry(_state: RetryCallState) -> None:
            if self.on_retry is not None:
                self.on_retry()

        # waits: backoff_s x 2^n plus up to backoff_s of jitter (tenacity's default jitter is a
        # whole second whatever the backoff), slept without holding the conversation's slot
        retrying = Retrying(
            retry=retry_if_exception_type(TransientBackendError),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential_jitter(multiplier=self.backoff_s, jitter=self.backoff_s,
                                         max=30 * max(self.backoff_s, 0.01)),
            sleep=self.backoff_sleep,
            before_sleep=count_retry,
            reraise=True,
        )
        state: dict[str, RetryCallState] = {}
        for att in retrying:
            state["s"] = att.retry_state
            with att:
                result = attempt()
        return result, state["s"].attempt_number

    # --- provenance -----------------------------------------------------------------------
    def preflight(self) -> None:
        """Server reachable, model pulled, digest and version read: one try, a short timeout."""
        quick = ollama.Client(host=self.host, timeout=min(self.timeout_s, PREFLIGHT_TIMEOUT_S))
        try:
            self._info = self._read_info(lambda fn, *a: (fn(*a), 1), quick)
        except PermanentBackendError:
            raise
        except Exception as err:  # noqa: BLE001 - classified below
            e = self._classify(err)
            if isinstance(e, TransientBackendError):
                raise PermanentBackendError(
                    f"ollama/{self.model}: the Ollama server at {self.host} does not answer "
                    f"({type(err).__name__}: {err}); start it (`ollama serve`) or point "
                    "OLLAMA_HOST / inference.ollama.host at a running one") from None
            raise e from None
        finally:
            quick._client.close()

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            self._info = self._read_info(self._call, self.client)
        return self._info

    def _read_info(self, call, client: ollama.Client) -> ModelInfo:
        try:
            tags, _ = call(client.list)
        except (ollama.ResponseError, PermanentBackendError) as err:
            status = getattr(err, "status_code", None) or getattr(err.__cause__, "status_code", None)
            if status == 404:  # every Ollama server has /api/tags
                raise PermanentBackendError(
                    f"ollama/{self.model}: {self.host} answered HTTP 404 to /api/tags, so it is "
                    "not an Ollama server; check OLLAMA_HOST / inference.ollama.host") from None
            raise
        wanted = {self.model, f"{self.model}:latest"}
        entry = next((m for m in tags.models if m.model in wanted), None)
        if entry is None:
            raise PermanentBackendError(
                f"ollama/{self.model}: model not found on {self.host}; "
                f"run `ollama pull {self.model}` on that server")
        version, _ = call(client._client.get, "/api/version")
        return ModelInfo(
            model_id=f"ollama/{self.model}", backend="ollama", model=self.model,
            digest=f"sha256:{entry.digest}" if entry.digest and ":" not in entry.digest
            else str(entry.digest),
            backend_version=f"ollama-server {version.json().get('version', '?')}; "
                            f"ollama-python {_client_version()}",
            quantization=_quantization(entry.details),
            extra={"host": self.host},
        )

    # --- the main method --------------------------------------------------------------------
    def converse(self, stimulus: StimulusInput | None, turns: Sequence[Turn],
                 options: GenerationOptions, *, json_schema: dict | None = None) -> list[TurnResult]:
        messages: list[dict] = []
        results = []
        opts = {"temperature": options.temperature, "seed": options.seed,
                "num_predict": options.max_tokens, "num_ctx": options.num_ctx}
        for turn in turns:
            msg: dict = {"role": "user", "content": turn.text}
            if turn.with_image and stimulus is not None:
                msg["images"] = [str(stimulus.image_path)]
            messages.append(msg)
            t0 = time.perf_counter()
            resp, attempts = self._call(
                self.client.chat, model=self.model, messages=list(messages), options=opts,
                format=json_schema, stream=False,
                logprobs=options.top_logprobs > 0 or None,
                top_logprobs=min(options.top_logprobs, 20) if options.top_logprobs > 0 else None,
            )
            text = resp.message.content or ""
            messages.append({"role": "assistant", "content": text})
            steps = tuple(
                TokenStep(lp.token, float(lp.logprob),
                          tuple((-1, t.token, float(t.logprob)) for t in (lp.top_logprobs or ())))
                for lp in (resp.logprobs or ())
            )
            results.append(TurnResult(
                text=text, steps=steps, latency_s=time.perf_counter() - t0,
                prompt_tokens=resp.prompt_eval_count or 0,
                completion_tokens=resp.eval_count or 0, attempts=attempts,
            ))
        return results

    def close(self) -> None:
        self.client._client.close()


def _client_version() -> str:
    from importlib.metadata import version

    return version("ollama")


def build(model: str, inference, *, emotions, stimulus_set=None) -> OllamaBackend:
    o = inference.ollama
    return OllamaBackend(model, host=o.host, concurrency=o.concurrency, timeout_s=o.timeout_s,
                         retries=o.retries, backoff_s=o.backoff_s)
