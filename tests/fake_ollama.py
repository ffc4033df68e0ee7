"""A stand-in Ollama server on 127.0.0.1 for tests (no Ollama binary exists on these machines).

It answers the documented API shapes the backend uses — ``POST /api/chat`` (images, ``format``,
``options``, ``logprobs``/``top_logprobs``), ``GET /api/tags``, ``POST /api/show``,
``GET /api/version`` — and a 404 ``{"error": "model '...' not found"}`` for unknown models. Faults
can be injected: HTTP 500s, dropped connections, and stalls longer than the client's timeout, at a
random rate, for the first N chats, or for the chats a predicate picks (``fail_when``).

Answers are deterministic from the request: the emotion turn answers a word, rating turns a digit
with a top-k list whose digits include " 7"-style variants, single-shot answers JSON.
Every request body is kept in ``requests`` so tests can check exactly what the client sent.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EMOTIONS = ("angry", "disgusted", "fearful", "happy", "sad", "surprised")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that gave up on a stalled or dropped request is expected under fault
        injection; anything else is printed as usual."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeOllama:
    def __init__(self, models: dict[str, str] | None = None, *, version: str = "0.12.9",
                 fault_rate: float = 0.0, faults: tuple[str, ...] = ("500", "drop", "stall"),
                 stall_s: float = 2.0, seed: int = 0, latency_s: float = 0.0,
                 reject_chat: int | None = None, fail_first: int = 0,
                 fail_when=None) -> None:
        self.models = models or {"gemma3:4b": "a2af6cc3eb7f" + "0" * 52}
        self.version = version
        self.fault_rate = fault_rate
        self.faults = faults
        self.stall_s = stall_s
        self.latency_s = latency_s
        self.reject_chat = reject_chat  # answer every chat with this 4xx status
        self.fail_first = fail_first  # the first N chats get a 500
        self.fail_when = fail_when  # chat body -> True: answer that chat with a 500
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests: list[dict] = []
        self.fault_log: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeOllama:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r.get("_path") == "/api/chat"]

    # --- answers ------------------------------------------------------------------------
    def _pick_fault(self) -> str | None:
        with self._lock:
            if self.fault_rate and self._rng.random() < self.fault_rate:
                fault = self._rng.choice(self.faults)
                self.fault_log.append(fault)
                return fault
        return None

    @staticmethod
    def _digit_logprobs(seed: int, k: int) -> list[dict]:
        centre = 1 + seed % 9
        weights = {d: math.exp(-((d - centre) ** 2) / 2.0) for d in range(1, 10)}
        z = sum(weights.values()) / 0.9  # 90 % of the mass on digits
        top = []
        for d, w in weights.items():
            top.append({"token": str(d), "logprob": math.log(0.8 * w / z)})
            top.append({"token": f" {d}", "logprob": math.log(0.2 * w / z)})
        top.append({"token": "The", "logprob": math.log(0.1)})
        top.sort(key=lambda t: -t["logprob"])
        return top[:k]

    def answer(self, body: dict) -> dict:
        messages = body.get("messages", [])
        last = messages[-1]["content"] if messages else ""
        images = [img for m in messages for img in (m.get("images") or [])]
        seed = int(hashlib.sha256((str(images) + last).encode()).hexdigest(), 16)
        want_lp = bool(body.get("logprobs"))
        k = int(body.get("top_logprobs") or 0)
        logprobs = None
        if body.get("format"):
            content = json.dumps({"emotion": EMOTIONS[seed % 6], "valence": 1 + seed % 9,
                                  "arousal": 1 + (seed // 9) % 9})
        elif "Which emotion" in last:
            content = EMOTIONS[seed % 6].capitalize()
            if want_lp:
                logprobs = [{"token": content, "logprob": -0.2,
                             "top_logprobs": [{"token": e.capitalize(), "logprob": -1.0 - i}
                                              for i, e in enumerate(EMOTIONS)][:k]}]
        else:
            top = self._digit_logprobs(seed, max(k, 1))
            content = top[0]["token"].strip()
            if want_lp:
                logprobs = [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                             "top_logprobs": top[:k]}]
        resp = {
            "model": body.get("model"), "created_at": "2026-11-30T00:00:00Z",
            "message": {"role": "assistant", "content": content},
            "done": True, "done_reason": "stop", "total_duration": 1000, "load_duration": 10,
            "prompt_eval_count": 20 + 10 * len(messages) + 256 * len(images),
            "prompt_eval_duration": 100, "eval_count": 1, "eval_duration": 100,
        }
        if logprobs is not None:
            resp["logprobs"] = logprobs
        return resp

    # --- HTTP ------------------------------------------------------------------------------
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as a real Ollama server has (Go's net/http sets it on every
            # connection). Without it the headers and the body go out as two writes, the second
            # held back by Nagle until the client's delayed ACK: about 40 ms added to every call.
            disable_nagle_algorithm = True

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a stalled request: expected under fault injection

            def _body(self) -> dict:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self):
                if self.path == "/api/version":
                    return self._send(200, {"version": fake.version})
                if self.path == "/api/tags":
                    return self._send(200, {"models": [
                        {"name": m, "model": m, "modified_at": "2026-11-01T00:00:00Z",
                         "size": 3338801804, "digest": d,
                         "details": {"format": "gguf", "family": "gemma3", "families": ["gemma3"],
                                     "parameter_size": "4.3B",
                                     "quantization_level": "F16" if "fp16" in m else "Q4_K_M"}}
                        for m, d in fake.models.items()]})
                return self._send(404, {"error": "not found"})

            def do_POST(self):
                body = self._body()
                body["_path"] = self.path
                body["_t"] = time.monotonic()  # arrival time (benchmarks: calls per second)
                with fake._lock:
                    fake.requests.append(body)
                if self.path == "/api/show":
                    if body.get("model") not in fake.models:
                        return self._send(404, {"error": f"model '{body.get('model')}' not found"})
                    return self._send(200, {"modelfile": "", "parameters": "", "template": "",
                                            "details": {"family": "gemma3"}, "model_info": {},
                                            "capabilities": ["completion", "vision"]})
                if self.path != "/api/chat":
                    return self._send(404, {"error": "not found"})
                if body.get("model") not in fake.models:
                    return self._send(404, {"error": f"model '{body.get('model')}' not found, "
                                                     "try pulling it first"})
                if fake.reject_chat:
                    return self._send(fake.reject_chat, {"error": "invalid request"})
                with fake._lock:
                    first = fake.fail_first > 0
                    fake.fail_first -= 1 if first else 0
                if first:
                    fake.fault_log.append("500-first")
                    return self._send(500, {"error": "model runner crashed"})
                if fake.fail_when is not None and fake.fail_when(body):
                    fake.fault_log.append("500-when")
                    return self._send(500, {"error": "model runner crashed"})
                fault = fake._pick_fault()
                if fault == "500":
                    return self._send(500, {"error": "llama runner process has terminated"})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if fault == "stall":
                    time.sleep(fake.stall_s)
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if fake.latency_s:
                        time.sleep(fake.latency_s)
                    return self._send(200, fake.answer(body))
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        return Handler
