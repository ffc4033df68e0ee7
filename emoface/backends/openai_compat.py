"""OpenAI-compatible servers (vLLM, SGLang, llama.cpp's llama-server, LM Studio), through the
official ``openai`` Python client with its own retries off (ours apply: emoface.backends.http).

Model ids are ``openai/<served model name>``, e.g. ``openai/Qwen/Qwen2.5-VL-7B-Instruct``. The
base URL is ``inference.openai.base_url`` or, when that is null, ``OPENAI_BASE_URL`` (else
http://127.0.0.1:8000/v1). The API key is read only from ``OPENAI_API_KEY`` (a local server
without ``--api-key`` takes any); it never goes into params, rows, logs or provenance.

* Every request states ``temperature``, ``top_p`` 1, ``seed``, ``max_tokens`` and ``n`` 1, and
  the engine extras ``top_k`` -1 / ``min_p`` 0 (``extra_body``) where the server accepts them:
  vLLM applies the model's ``generation_config.json`` to any parameter a request omits.
* The image is a base64 data URL in the first user turn only; each answer is carried as an
  assistant message before the next question (context-carry).
* Every turn asks ``logprobs: true`` with ``top_logprobs`` = min(``inference.top_logprobs``, the
  server's maximum; above vLLM's ``--max-logprobs`` a request is a 400). The top-k lists become
  :class:`TokenStep` alternatives, so digit variants ("7", " 7") are merged and stored exactly as
  for Ollama (emoface.logits, the same NPZ layout).
* Single-shot sends the JSON schema as ``response_format: {type: json_schema}``.
* ``usage.prompt_tokens_details.cached_tokens`` (prefix-cache hits; vLLM reports it with
  ``--enable-prompt-tokens-details``) is kept per turn and summed per row.
* :meth:`OpenAICompatBackend.preflight` checks in seconds: the server answers (``/v1/models``,
  one try) and serves the model, and a one-token probe (retried on transient errors like any
  call) finds the log-probability cap and whether the extras are accepted.
* Provenance per row: the base URL (``served_by``), and in ``backend_version`` the served model id,
  its ``root`` and ``max_model_len`` from ``/v1/models``, the server version (``/version`` where
  it exists). **This API gives no weight digest.** The store's cache key needs a stable value in
  its place: ``model_digest`` is ``no-weight-digest:`` + SHA-256 over (served id, root,
  max_model_len, server version, the log-probability cap, extras accepted), so a server that
  serves other files under the same root, another version or another context length plans new
  batches; the same files behind the same path and version cannot be told apart from here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai

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
    RateLimited,
    breaker_for,
    parse_retry_after,
    preflight_errors,
)
from emoface.prompts import Turn

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
MAX_TOP_LOGPROBS = 20  # what the study stores (and vLLM's default --max-logprobs)
EXTRAS = {"top_k": -1, "min_p": 0.0}  # engine extras: no top-k/min-p truncation
_CAP = re.compile(r"max(?:imum)?[ _]*(?:allowed|logprobs)?\D{0,12}(\d+)", re.IGNORECASE)
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def public_url(url: str) -> str:
    """The URL without user:password (never written anywhere)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


@dataclass(frozen=True)
class ServerInfo:
    """What the server said about the model (provenance) and what it accepts (request shape)."""

    served_id: str
    root: str | None
    max_model_len: int | None
    version: str | None
    top_logprobs: int  # the cap this run asks for (min of ours and the server's)
    extras: bool  # top_k / min_p accepted

    def key(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True)
        return f"no-weight-digest:{hashlib.sha256(payload.encode()).hexdigest()}"


class OpenAICompatBackend(Backend):
    threads_per_slot = THREADS_PER_SLOT  # conversations in a backoff leave their slot to others

    def __init__(self, model: str, *, base_url: str | None, concurrency: int, timeout_s: float,
                 retries: int, backoff_s: float, top_logprobs: int = MAX_TOP_LOGPROBS) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
                         ).rstrip("/")
        self.host = public_url(self.base_url)
        self.max_concurrency = concurrency
        self.timeout_s = timeout_s
        self.wanted_logprobs = min(top_logprobs, MAX_TOP_LOGPROBS)
        self.client = self._client(timeout_s)
        self.breaker = breaker_for(
            self.host, server="the OpenAI-compatible server",
            fix="check that server (`vllm serve ...` or your engine, its log) and OPENAI_BASE_URL")
        self.wake = self.breaker.opened  # a backoff sleep ends when the server is found down
        self._retries = HttpRetries(self, self.breaker, retries=retries, backoff_s=backoff_s)
        self._server: ServerInfo | None = None
        self._info: ModelInfo | None = None

    def _client(self, timeout_s: float) -> openai.OpenAI:
        # the key only from the environment; a local server without --api-key takes any
        return openai.OpenAI(base_url=self.base_url, api_key=os.environ.get("OPENAI_API_KEY")
                             or "EMPTY", max_retries=0, timeout=timeout_s)

    @property
    def label(self) -> str:
        return f"openai/{self.model}"

    # --- errors -----------------------------------------------------------------------------
    def _classify(self, err: Exception) -> Exception:
        if isinstance(err, openai.APIStatusError):
            code = err.status_code
            msg = _message(err)
            if code == 429:
                return RateLimited(f"{self.label}: rate limited by {self.host} (429): {msg}",
                                   parse_retry_after(err.response.headers.get("retry-after")))
            if code >= 500:
                return TransientBackendError(f"{self.label}: server error {code}: {msg}")
            if code == 404:
                return PermanentBackendError(
                    f"{self.label}: {self.host} does not serve model {self.model!r} ({msg}); "
                    "start the server with it (`vllm serve MODEL --served-model-name NAME`) or "
                    "use the name /v1/models lists")
            if code in (401, 403):
                return PermanentBackendError(
                    f"{self.label}: {self.host} refused the API key ({code}); set OPENAI_API_KEY "
                    "to the key the server was started with (--api-key)")
            return PermanentBackendError(f"{self.label}: request rejected by {self.host} "
                                         f"({code}): {msg}")
        if isinstance(err, (openai.APIConnectionError, httpx.TransportError, ConnectionError,
                            json.JSONDecodeError)):
            return TransientBackendError(
                f"{self.label}: cannot reach {self.host} ({type(err).__name__}: {err}); is the "
                "server running there (OPENAI_BASE_URL / inference.openai.base_url)?")
        return err

    def _call(self, fn, *args, **kwargs):
        """Call the client with retries on transient errors; returns (result, attempts)."""
        return self._retries.call(self._classify, fn, *args, **kwargs)

    # --- what the server serves and accepts -----------------------------------------------
    def preflight(self) -> None:
        """Server answers, model served, log-probabilities allowed: one try each, seconds."""
        quick = self._client(min(self.timeout_s, PREFLIGHT_TIMEOUT_S))

        def down(err: Exception) -> str:
            return (f"{self.label}: the OpenAI-compatible server at {self.host} does not "
                    f"answer ({type(err).__name__}: {err}); start it (e.g. `vllm serve {self.model}`)"
                    " or point OPENAI_BASE_URL / inference.openai.base_url at a running one")
        try:
            # /v1/models once (a dead server fails at once); the probe is a model call, retried
            # on transient errors as any call is (a server failing some requests still runs)
            with preflight_errors(self._classify, down):
                self._server = self._read_server(
                    lambda fn, *a, **k: (fn(*a, **k), 1), quick,
                    probe=lambda fn, *a, **k: self._call(fn, *a, **k))
        finally:
            quick.close()

    def _read_server(self, call, client: openai.OpenAI, probe=None) -> ServerInfo:
        models, _ = call(client.models.list)
        served = {m.id: m for m in models.data}
        entry = served.get(self.model)
        if entry is None:
            names = ", ".join(sorted(served)) or "nothing"
            raise PermanentBackendError(
                f"{self.label}: {self.host} does not serve {self.model!r} (it serves: {names}); "
                f"start it with that model (`vllm serve {self.model}`, or --served-model-name) "
                "or use one of those names")
        version = self._version(client)
        root = getattr(entry, "root", None)
        max_len = getattr(entry, "max_model_len", None)
        cap, extras = self._probe(probe or call, client)
        return ServerInfo(self.model, str(root) if root else None,
                          int(max_len) if max_len else None, version, cap, extras)

    def _version(self, client: openai.OpenAI) -> str | None:
        """``GET /version`` beside ``/v1`` (vLLM, SGLang); None where the server has none."""
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        try:
            resp = httpx.get(f"{root}/version", timeout=min(self.timeout_s, PREFLIGHT_TIMEOUT_S),
                             headers={"Authorization": f"Bearer {client.api_key}"})
            if resp.status_code == 200:
                v = resp.json().get("version")
                return str(v) if v else None
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return None

    def _probe(self, call, client: openai.OpenAI) -> tuple[int, bool]:
        """A one-token request finds the log-probability cap and whether the extras pass."""
        k, extras = self.wanted_logprobs, True
        for _ in range(4):
            body = {"model": self.model, "messages": [{"role": "user", "content": "Say 1."}],
                    "temperature": 0.0, "top_p": 1.0, "seed": 0, "max_tokens": 1, "n": 1}
            if k > 0:
                body.update(logprobs=True, top_logprobs=k)
            try:
                resp, _ = call(client.chat.completions.create, **body,
                               **({"extra_body": dict(EXTRAS)} if extras else {}))
            except (openai.BadRequestError, PermanentBackendError) as err:
                cause = err if isinstance(err, openai.BadRequestError) else err.__cause__
                if not isinstance(cause, openai.BadRequestError):
                    raise
                msg = _message(cause)
                cap = _CAP.search(msg) if "logprob" in msg.lower() else None
                if cap and 0 < int(cap.group(1)) < k:
                    k = int(cap.group(1))
                elif extras:
                    extras = False
                else:
                    raise PermanentBackendError(
                        f"{self.label}: {self.host} refuses log-probabilities ({msg}); they are "
                        "needed for the rating steps: start vLLM with --max-logprobs 20 (other "
                        "engines: see README, OpenAI-compatible servers)") from None
                continue
            choice = resp.choices[0]
            if k > 0 and not (choice.logprobs and choice.logprobs.content):
                raise PermanentBackendError(
                    f"{self.label}: {self.host} answered without log-probabilities; the rating "
                    "steps need them: use an engine that returns them (vLLM, SGLang, "
                    "llama-server; see README)")
            return k, extras
        raise PermanentBackendError(f"{self.label}: {self.host} rejects every request shape "
                                    "tried (log-probabilities, top_k/min_p)")

    @property
    def server(self) -> ServerInfo:
        if self._server is None:
            self._server = self._read_server(self._call, self.client)
        return self._server

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            s = self.server
            extras = "top_k=-1, min_p=0 sent" if s.extras else "top_k/min_p not accepted"
            self._info = ModelInfo(
                model_id=self.label, backend="openai", model=self.model, digest=s.key(),
                backend_version=(
                    f"server {s.version or 'version unknown (no /version)'}; served {s.served_id};"
                    f" root {s.root or '?'}; max_model_len {s.max_model_len or '?'}; "
                    f"top_logprobs {s.top_logprobs}; {extras}; no weight digest from this API; "
                    f"openai-python {openai.__version__}"),
                quantization="unknown",
                extra={"host": self.host, "served_model": s.served_id, "root": s.root,
                       "max_model_len": s.max_model_len, "server_version": s.version,
                       "weight_digest": None,
                       "weight_digest_note": "not available from the OpenAI-compatible API"},
            )
        return self._info

    # --- the main method --------------------------------------------------------------------
    def converse(self, stimulus: StimulusInput | None, turns: Sequence[Turn],
                 options: GenerationOptions, *, json_schema: dict | None = None) -> list[TurnResult]:
        server = self.server
        messages: list[dict] = []
        results: list[TurnResult] = []
        image_sent = False
        try:
            for turn in turns:
                content: str | list[dict] = turn.text
                if turn.with_image and stimulus is not None and not image_sent:
                    content = [{"type": "text", "text": turn.text},
                               {"type": "image_url", "image_url": {"url": _data_url(stimulus)}}]
                    image_sent = True
                messages.append({"role": "user", "content": content})
                results.append(self._turn(messages, server, options, json_schema))
                messages.append({"role": "assistant", "content": results[-1].text})
        except TransientBackendError:
            # the turns already answered are lost with the conversation and will be sent again
            self._count_retries(len(results))
            raise
        return results

    def request(self, messages: list[dict], server: ServerInfo, options: GenerationOptions,
                json_schema: dict | None) -> dict:
        """The request body (keyword arguments of the client) for one turn."""
        body: dict = {"model": self.model, "messages": list(messages),
                      "temperature": options.temperature, "top_p": 1.0, "seed": options.seed,
                      "max_tokens": options.max_tokens, "n": 1, "stream": False}
        k = min(options.top_logprobs, server.top_logprobs)
        if k > 0:
            body.update(logprobs=True, top_logprobs=k)
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "rating", "schema": json_schema, "strict": True}}
        if server.extras:
            body["extra_body"] = dict(EXTRAS)
        return body

    def _turn(self, messages: list[dict], server: ServerInfo, options: GenerationOptions,
              json_schema: dict | None) -> TurnResult:
        t0 = time.perf_counter()
        resp, attempts = self._call(self.client.chat.completions.create,
                                    **self.request(messages, server, options, json_schema))
        choice = resp.choices[0]
        content = choice.logprobs.content if choice.logprobs and choice.logprobs.content else ()
        steps = tuple(
            TokenStep(t.token, float(t.logprob),
                      tuple((-1, a.token, float(a.logprob)) for a in (t.top_logprobs or ())))
            for t in content)
        usage = resp.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return TurnResult(
            text=choice.message.content or "", steps=steps, latency_s=time.perf_counter() - t0,
            prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
            completion_tokens=(usage.completion_tokens or 0) if usage else 0,
            cached_tokens=int(getattr(details, "cached_tokens", None) or 0),
            attempts=attempts)

    def close(self) -> None:
        self.client.close()


def _message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner)
        return str(body.get("message") or inner)
    return str(err.message)


def _data_url(stimulus: StimulusInput) -> str:
    mime = _MIME.get(stimulus.image_path.suffix.lower(), "image/png")
    return f"data:{mime};base64,{base64.b64encode(stimulus.image_path.read_bytes()).decode()}"


def build(model: str, inference, *, emotions, stimulus_set=None) -> OpenAICompatBackend:
    o = inference.openai
    return OpenAICompatBackend(model, base_url=o.base_url, concurrency=o.concurrency,
                               timeout_s=o.timeout_s, retries=o.retries, backoff_s=o.backoff_s,
                               top_logprobs=inference.top_logprobs)
