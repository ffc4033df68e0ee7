"""A stand-in OpenAI-compatible server on 127.0.0.1 for tests and benchmarks (no GPU, no vLLM).

Written from the public API description (OpenAI's chat completions; vLLM's extensions):

* ``POST /v1/chat/completions``: messages whose content is a string or a list of parts
  (``{"type": "text"}``, ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``);
  ``temperature``, ``top_p``, ``seed``, ``max_tokens``, ``n``; ``logprobs``/``top_logprobs`` with
  a server maximum (``max_logprobs``, vLLM's ``--max-logprobs``; above it a 400 with vLLM's
  message); ``response_format: {type: json_schema, json_schema: {name, schema}}``; the vLLM extras
  ``top_k``/``min_p`` (or, with ``accept_extras=False``, a 400 for them as a strict server gives);
  ``usage.prompt_tokens_details.cached_tokens`` from a simple prefix cache (below; null when
  nothing was cached, as vLLM reports it);
* ``GET /v1/models`` (``id``, ``root``, ``max_model_len``, ``owned_by``), ``GET /version``
  (``version=None``: 404, as servers without it);
* errors as ``{"error": {"message", "type", "param", "code"}}``: an unknown model is a 404
  "The model `X` does not exist.";
* faults: HTTP 500s, dropped connections, 429 with ``Retry-After`` (a random ``fault_rate``, the
  first ``fail_first`` chats, or the chats a predicate picks: ``fail_when``).

The prompt is "tokenized" deterministically: a few tokens per message for the chat template, one
token per word of text, and ``image_tokens`` tokens per image derived from its bytes. The prefix
cache (``cache_blocks`` > 0) works as vLLM's automatic prefix caching does: whole blocks of
``block_size`` tokens, each identified by the hash of every token up to its end, kept in an LRU
of ``cache_blocks`` blocks; a request's cached tokens are its leading blocks found in the cache
(never the whole prompt: the last token is always computed).

Answers are deterministic from the request (image + last question): the emotion turn answers a
word, rating turns a digit with a top-k list that holds "7" and " 7"-style variants, single-shot
answers JSON. Every request body is kept in ``requests``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EMOTIONS = ("angry", "disgusted", "fearful", "happy", "sad", "surprised")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _error(message: str, code: int, typ: str = "BadRequestError", param: str | None = None):
    return code, {"error": {"message": message, "type": typ, "param": param, "code": code}}


class FakeOpenAI:
    def __init__(self, models: dict[str, dict] | None = None, *, version: str | None = "0.11.0",
                 max_logprobs: int = 20, accept_extras: bool = True, fault_rate: float = 0.0,
                 faults: tuple[str, ...] = ("500", "drop", "429"), retry_after: str = "0",
                 fail_first: int = 0, seed: int = 0, latency_s: float = 0.0,
                 cache_blocks: int = 0, block_size: int = 16, image_tokens: int = 256,
                 report_cached: bool = True, api_key: str | None = None,
                 fail_when=None) -> None:
        self.models = models or {"Qwen/Qwen2.5-VL-7B-Instruct": {
            "root": "/models/Qwen2.5-VL-7B-Instruct", "max_model_len": 32768}}
        self.version = version
        self.max_logprobs = max_logprobs
        self.accept_extras = accept_extras
        self.fault_rate, self.faults, self.retry_after = fault_rate, faults, retry_after
        self.fail_first = fail_first
        self.fail_when = fail_when  # chat body -> True: answer that chat with a 500
        self.latency_s = latency_s
        self.cache_blocks, self.block_size, self.image_tokens = cache_blocks, block_size, image_tokens
        self.report_cached = report_cached
        self.api_key = api_key
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, None] = OrderedDict()
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fault_log: list[str] = []
        self.usage_log: list[dict] = []  # per answered chat: prompt/cached tokens, image turn
        self.in_flight = self.max_in_flight = 0
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r.get("_path") == "/v1/chat/completions"]

    # --- tokens and the prefix cache --------------------------------------------------------
    def tokens(self, messages: list[dict]) -> list[str]:
        out: list[str] = []
        for m in messages:
            out += [f"<|{m.get('role')}|>", "<|start|>"]
            content = m.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for p in parts or ():
                if p.get("type") == "text":
                    out += p.get("text", "").split()
                elif p.get("type") == "image_url":
                    h = hashlib.sha256(p["image_url"]["url"].encode()).hexdigest()
                    out += [f"<img:{h[:12]}:{i}>" for i in range(self.image_tokens)]
            out.append("<|end|>")
        return [*out, "<|assistant|>"]

    def _cached(self, tokens: list[str]) -> int:
        """Leading whole blocks found in the cache; then every whole block is cached (LRU)."""
        if self.cache_blocks <= 0:
            return 0
        h = hashlib.sha256()
        keys = []
        for i in range(len(tokens) // self.block_size):
            h.update("\0".join(tokens[i * self.block_size:(i + 1) * self.block_size]).encode())
            keys.append(h.hexdigest())
        hits = 0
        with self._lock:
            for k in keys:
                if k not in self._cache:
                    break
                hits += 1
            if hits * self.block_size >= len(tokens):  # the last token is always computed
                hits -= 1
            for k in keys:
                self._cache[k] = None
                self._cache.move_to_end(k)
            while len(self._cache) > self.cache_blocks:
                self._cache.popitem(last=False)
        return hits * self.block_size

    # --- answers ----------------------------------------------------------------------------
    @staticmethod
    def _digit_top(seed: int) -> list[tuple[str, float]]:
        centre = 1 + seed % 9
        weights = {d: math.exp(-((d - centre) ** 2) / 2.0) for d in range(1, 10)}
        z = sum(weights.values()) / 0.9  # 90 % of the mass on digits
        top = [(str(d), math.log(0.8 * w / z)) for d, w in weights.items()]
        top += [(f" {d}", math.log(0.2 * w / z)) for d, w in weights.items()]
        top.append(("The", math.log(0.1)))
        return sorted(top, key=lambda t: -t[1])

    @staticmethod
    def _entry(token: str, lp: float, top: list[tuple[str, float]]) -> dict:
        return {"token": token, "logprob": lp, "bytes": list(token.encode()),
                "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                                 for t, v in top]}

    def answer(self, body: dict) -> tuple[int, dict]:
        messages = body.get("messages") or []
        images = [p["image_url"]["url"] for m in messages if isinstance(m.get("content"), list)
                  for p in m["content"] if p.get("type") == "image_url"]
        last = messages[-1]["content"] if messages else ""
        if isinstance(last, list):
            last = " ".join(p.get("text", "") for p in last if p.get("type") == "text")
        seed = int(hashlib.sha256((str([hashlib.sha256(i.encode()).hexdigest() for i in images])
                                   + last).encode()).hexdigest(), 16)
        k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
        fmt = body.get("response_format") or {}
        logprobs = None
        if fmt.get("type") == "json_schema":
            if "name" not in (fmt.get("json_schema") or {}):
                return _error("json_schema.name: Field required", 400, param="response_format")
            content = json.dumps({"emotion": EMOTIONS[seed % 6], "valence": 1 + seed % 9,
                                  "arousal": 1 + (seed // 9) % 9})
            if k:
                logprobs = [self._entry("{", -0.01, [("{", -0.01)][:k])]
        elif "Which emotion" in last:
            content = EMOTIONS[seed % 6].capitalize()
            top = [(e.capitalize(), -1.0 - i) for i, e in enumerate(EMOTIONS)]
            if k:
                logprobs = [self._entry(content, -0.2, top[:k])]
        elif last.startswith("Say 1"):  # a client's probe
            content = "1"
            if k:
                logprobs = [self._entry("1", -0.1, [("1", -0.1)])]
        else:
            top = self._digit_top(seed)
            content = top[0][0].strip()
            if k:
                logprobs = [self._entry(top[0][0], top[0][1], top[:k])]
        tokens = self.tokens(messages)
        cached = self._cached(tokens)
        with self._lock:
            self.usage_log.append({"prompt_tokens": len(tokens), "cached_tokens": cached,
                                   "image_turn": bool(images) and len(messages) == 1})
        details = {"cached_tokens": cached if cached else None} if self.report_cached else None
        return 200, {
            "id": f"chatcmpl-{seed % 10**12}", "object": "chat.completion", "created": 1764460800,
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": {"content": logprobs} if logprobs is not None else None,
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": 1,
                      "total_tokens": len(tokens) + 1, "prompt_tokens_details": details},
        }

    def check(self, body: dict) -> tuple[int, dict] | None:
        """What a strict server rejects before generating."""
        if body.get("model") not in self.models:
            return _error(f"The model `{body.get('model')}` does not exist.", 404,
                          "NotFoundError", "model")
        if body.get("logprobs") and int(body.get("top_logprobs") or 0) > self.max_logprobs:
            return _error(f"Requested sample logprobs of {body['top_logprobs']}, which is greater "
                          f"than max allowed: {self.max_logprobs}", 400)
        if not self.accept_extras and ({"top_k", "min_p"} & set(body)):
            extra = sorted({"top_k", "min_p"} & set(body))[0]
            return _error(f"{extra}: Extra inputs are not permitted", 400, param=extra)
        if body.get("n", 1) != 1:
            return _error("n must be 1", 400, param="n")
        return None

    # --- HTTP -------------------------------------------------------------------------------
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _authorised(self) -> bool:
                if fake.api_key is None or not self.path.startswith("/v1/"):
                    return True
                if self.headers.get("Authorization") == f"Bearer {fake.api_key}":
                    return True
                self._send(401, {"error": "Unauthorized"})
                return False

            def do_GET(self):
                with fake._lock:
                    fake.requests.append({"_path": self.path})
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                if not self._authorised():
                    return None
                if self.path == "/version" and fake.version is not None:
                    return self._send(200, {"version": fake.version})
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 1764460800, "owned_by": "vllm",
                         "root": d.get("root", m), "parent": None,
                         "max_model_len": d.get("max_model_len", 32768)}
                        for m, d in fake.models.items()]})
                return self._send(404, {"detail": "Not Found"})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                body["_path"] = self.path
                body["_t"] = time.monotonic()
                with fake._lock:
                    fake.requests.append(body)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                if not self._authorised():
                    return None
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"detail": "Not Found"})
                clean = {k: v for k, v in body.items() if not k.startswith("_")}
                rejected = fake.check(clean)
                if rejected is not None:
                    return self._send(*rejected)
                with fake._lock:
                    first = fake.fail_first > 0
                    fake.fail_first -= 1 if first else 0
                    if not first and fake.fail_when is not None and fake.fail_when(clean):
                        first = True
                    fault = None
                    if not first and fake.fault_rate and fake._rng.random() < fake.fault_rate:
                        fault = fake._rng.choice(fake.faults)
                    if first or fault:
                        fake.fault_log.append(fault or "500-first")
                if first or fault == "500":
                    return self._send(*_error("EngineCore encountered an issue", 500,
                                              "InternalServerError"))
                if fault == "429":
                    return self._send(*_error("Too many requests", 429, "RateLimitError"),
                                      headers={"Retry-After": fake.retry_after})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if fake.latency_s:
                        time.sleep(fake.latency_s)
                    return self._send(*fake.answer(clean))
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        return Handler


def image_of(body: dict) -> str | None:
    """The data URL of the image in a request's first user turn (None for text-only)."""
    first = body["messages"][0]["content"]
    if isinstance(first, list):
        for p in first:
            if p.get("type") == "image_url":
                return p["image_url"]["url"]
    return None


def decode_image(url: str) -> bytes:
    return base64.b64decode(url.split(",", 1)[1])
