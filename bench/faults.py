"""Inference under injected transient faults, against the stand-in Ollama server
(``tests/fake_ollama.py``): throughput and requests per answer, as ratios measured in one run.

The production path (``emoface.inference.scheduler.run_condition`` with the Ollama backend: batches,
threads, per-call retries with backoff, the circuit breaker) rates the same stimuli twice, once
against a fault-free server and once against one where ``--fault-rate`` of the chat requests fail
(HTTP 500 or a dropped connection by default; ``--faults 500,drop,stall`` adds stalls longer than
the client timeout). Reported:

* ``throughput_ratio`` = faulty answers/s over fault-free answers/s (target >= 0.8 at 30 % with the
  default backoff: conversations of later batches use the slots of those backing off, and at the
  end of the run, with nothing else left, a backoff ends early while the server is answering);
* ``requests_per_answer`` = chat requests the faulty server received per answer (target <= 1.5;
  1 / (1 - 0.3) = 1.43 is the floor when every fault costs exactly one request);
* ``rows_identical``: the faulty run's rows equal the fault-free run's (latency and attempt
  columns aside).

Then three runs that must fail fast, each timed from the start of the run and with the number of
chat requests it cost: a dead server (nothing listens), a model that is not pulled, a server that
answers every chat with HTTP 500.

Defaults are real scale: the 1,440 embedded stimuli, the default ``inference.ollama.backoff_s``
(1 s) and 50 ms per chat request (a fast server; a real one takes 0.5-1 s per turn, which only
makes the backoff matter less).

    python bench/faults.py [--stimuli-per-cell 60] [--latency 0.05] [--backoff 1.0] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("latency_s", "attempts", "backend_version", "served_by")  # served_by: each server its port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stimuli-per-cell", type=int, default=60, help="identities per race x gender")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--backoff", type=float, default=None,
                    help="inference.ollama.backoff_s (default: its default, 1 s)")
    ap.add_argument("--fault-rate", type=float, default=0.3)
    ap.add_argument("--faults", default="500,drop")
    ap.add_argument("--timeout", type=float, default=0.5, help="client timeout (stall faults)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from emoface.backends import make_backend
    from emoface.backends.base import BackendError
    from emoface.config import InferenceParams, OllamaParams, Params, StimuliParams
    from emoface.inference.conditions import Condition
    from emoface.inference.preflight import preflight
    from emoface.inference.scheduler import run_condition
    from emoface.inference.store import PredictionStore
    from emoface.paths import DataPaths
    from emoface.stimuli.generate import generate_stimulus_set
    from emoface.stimuli.store import load_stimulus_set
    from tests.fake_ollama import FakeOllama

    if args.backoff is None:
        args.backoff = OllamaParams().backoff_s

    p = Params(stimuli=StimuliParams(identities_per_cell=args.stimuli_per_cell))
    tmp = Path(tempfile.mkdtemp())
    data = DataPaths(tmp / "data")
    generate_stimulus_set(p.study, p.stimuli, data.stimulus_set("embedded"))
    ss = load_stimulus_set(data.stimulus_set("embedded"), p.study)
    condition = Condition()

    def inference(host: str) -> InferenceParams:
        return InferenceParams(ollama=OllamaParams(
            host=host, concurrency=args.concurrency, timeout_s=args.timeout,
            backoff_s=args.backoff, retries=OllamaParams().retries))

    def rate(server: FakeOllama, folder: str):
        inf = inference(server.host)
        be = make_backend("ollama/gemma3:4b", inf, emotions=p.study.emotions)
        t0 = time.perf_counter()
        rows, calls = run_condition(be, ss, condition, condition.options(inf),
                                    PredictionStore(tmp / folder), p.study.emotions,
                                    batch_size=p.inference.batch_size)
        return rows, calls, time.perf_counter() - t0

    with FakeOllama(latency_s=args.latency) as clean:
        rows0, calls0, wall0 = rate(clean, "clean")
    with FakeOllama(latency_s=args.latency, fault_rate=args.fault_rate,
                    faults=tuple(args.faults.split(",")), stall_s=2 * args.timeout,
                    seed=11) as faulty:
        rows1, calls1, wall1 = rate(faulty, "faulty")
        requests = len(faulty.chat_requests())
        injected = len(faulty.fault_log)
    keep = [c for c in rows0.columns if c not in VOLATILE]
    identical = rows0.select(keep).equals(rows1.select(keep))
    differ = [c for c in keep if not rows0[c].equals(rows1[c])]

    def fail_fast(kind: str) -> dict:
        """Seconds from the start until the first error, and the chat requests it cost."""
        server = None
        if kind == "dead":
            host = f"http://127.0.0.1:{_free_port()}"
        else:
            server = FakeOllama(latency_s=args.latency, **(
                {"fault_rate": 1.0, "faults": ("500",)} if kind == "always_500" else {}),
                models={"llava:7b": "0" * 64} if kind == "missing_model" else None).__enter__()
            host = server.host
        inf = InferenceParams(ollama=OllamaParams(host=host, concurrency=args.concurrency))
        t0 = time.perf_counter()
        try:  # what flows/ablations.py does: preflight, then the batches
            preflight(["ollama/gemma3:4b"], inf)
            be = make_backend("ollama/gemma3:4b", inf, emotions=p.study.emotions)
            run_condition(be, ss, condition, condition.options(inf),
                          PredictionStore(tmp / kind), p.study.emotions,
                          batch_size=p.inference.batch_size)
            message = "(no error)"
        except BackendError as err:
            message = str(err)
        seconds = time.perf_counter() - t0
        chats = len(server.chat_requests()) if server else 0
        if server:
            server.__exit__(None, None, None)
        return {"seconds": round(seconds, 2), "chat_requests": chats, "message": message}

    out = {
        "stimuli": ss.manifest.height, "answers": calls0, "latency_s": args.latency,
        "backoff_s": args.backoff, "concurrency": args.concurrency,
        "fault_rate": args.fault_rate, "faults": args.faults,
        "faults_injected": injected,
        "fault_free_s": round(wall0, 2), "faulty_s": round(wall1, 2),
        "throughput_ratio": round((calls1 / wall1) / (calls0 / wall0), 3),
        "requests_per_answer": round(requests / calls1, 3),
        "rows_identical": identical, "columns_differing": differ,
        "fail_fast": {k: fail_fast(k) for k in ("dead", "missing_model", "always_500")},
        "targets": {"throughput_ratio_min": 0.8, "requests_per_answer_max": 1.5},
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{calls0} answers, {args.latency * 1000:.0f} ms/request, backoff {args.backoff} s, "
              f"concurrency {args.concurrency}: fault-free {wall0:.1f} s; at "
              f"{args.fault_rate:.0%} faults ({args.faults}; {injected} injected) {wall1:.1f} s -> "
              f"throughput {out['throughput_ratio']:.2f} x, {out['requests_per_answer']:.2f} "
              f"requests per answer, rows identical: {identical}"
              + (f" (differing: {', '.join(differ)})" if differ else ""))
        for k, v in out["fail_fast"].items():
            print(f"  {k}: {v['seconds']} s, {v['chat_requests']} chat requests: {v['message']}")
    ok = (out["throughput_ratio"] >= 0.8 and out["requests_per_answer"] <= 1.5 and identical)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
