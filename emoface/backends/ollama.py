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
  backoff and jitter; the sleep before a retry does not hold the conversation's slot, so other
  conversations keep the server busy. Permanent ones (model not pulled, other 4xx) fail at once
  and say what to run. A circuit breaker stops the run when the server is down. Both live in
  :mod:`emoface.backends.http`, shared by every HTTP backend; this module only classifies errors.
* :meth:`OllamaBackend.preflight` checks in seconds, without retries, that the server answers and
  has the model (the flow calls it for every model before it starts).
* The host is ``inference.ollama.host`` or, when that is null, ``OLLAMA_HOST`` as the client reads it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import httpx
import ollama

from emoface.backends.base import (
    Backend,
    GenerationOptions,
    ModelInfo,
    PermanentBackendError,
    StimulusInput,
    TokenStep,
    TransientBackendError,
    TurnResult,
)
from emoface.backends.http import (
    PREFLIGHT_TIMEOUT_S,
    THREADS_PER_SLOT,
    HttpRetries,
    breaker_for,
    preflight_errors,
)
from emoface.prompts import Turn

_TRANSIENT_HTTPX = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)



def _quantization(details: object) -> str:
    level = getattr(details, "quantization_level", None) if details is not None else None
    return str(level) if level else "unknown"


class OllamaBackend(Backend):
    threads_per_slot = THREADS_PER_SLOT  # conversations in a backoff leave their slot to others

    def __init__(self, model: str, *, host: str | None, concurrency: int, timeout_s: float,
                 retries: int, backoff_s: float) -> None:
        self.model = model
        self.client = ollama.Client(host=host, timeout=timeout_s)
        self.host = str(self.client._client.base_url)
        self.max_concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.breaker = breaker_for(self.host, server="the Ollama server",
                                   fix="check that server (`ollama serve`, its log)")
        self.wake = self.breaker.opened  # a backoff sleep ends when the server is found down
        self._retries = HttpRetries(self, self.breaker, retries=retries, backoff_s=backoff_s)
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
        """Call the client with retries on transient errors (emoface.backends.http); returns
        (result, attempts)."""
        return self._retries.call(self._classify, fn, *args, **kwargs)

    # --- provenance -----------------------------------------------------------------------
    def preflight(self) -> None:
        """Server reachable, model pulled, digest and version read: one try, a short timeout."""
        quick = ollama.Client(host=self.host, timeout=min(self.timeout_s, PREFLIGHT_TIMEOUT_S))

        def down(err: Exception) -> str:
            return (f"ollama/{self.model}: the Ollama server at {self.host} does not "
                    f"answer ({type(err).__name__}: {err}); start it (`ollama serve`) or point "
                    "OLLAMA_HOST / inference.ollama.host at a running one")
        try:
            with preflight_errors(self._classify, down):
                self._info = self._read_info(lambda fn, *a: (fn(*a), 1), quick)
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
        try:
            for turn in turns:
                self._turn(turn, stimulus, messages, results, opts, options, json_schema)
        except TransientBackendError as err:
            # the turns already answered are lost with the conversation and will be sent again
            self._count_retries(len(results))
            raise err
        return results

    def _turn(self, turn: Turn, stimulus: StimulusInput | None, messages: list[dict],
              results: list[TurnResult], opts: dict, options: GenerationOptions,
              json_schema: dict | None) -> None:
        """One request of the conversation: appends the question and the answer."""
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

    def close(self) -> None:
        self.client._client.close()


def _client_version() -> str:
    from importlib.metadata import version

    return version("ollama")


def build(model: str, inference, *, emotions, stimulus_set=None) -> OllamaBackend:
    o = inference.ollama
    return OllamaBackend(model, host=o.host, concurrency=o.concurrency, timeout_s=o.timeout_s,
                         retries=o.retries, backoff_s=o.backoff_s)
