"""The flow against a server that answers every chat with HTTP 500 (``tests/fake_ollama.py``):
how many chat requests the run sends and how long it takes from its first chat request to its
exit (the circuit breaker needs at least 3 s of failures by design; the rest is the run ending).

    python bench/server_down.py [--latency 0.05] [-- ARGS for flows/ablations.py]

Defaults: ``--priority 1 --models ollama/gemma3:4b`` on the embedded 1,440-face set (generated
into a temporary data folder), the repository's params.yaml (retries 4, backoff 1 s,
concurrency 4). Prints one JSON line: rc, wall_s (whole run, the Prefect server's start
included), first_request_to_exit_s (and of it result_to_exit_s: the temporary server stopping),
chat_requests, requests counted by the breaker's message.

Measured here (2-core machine shared with other jobs, load 5, 50 ms per call, default params):
129 chat requests, all counted by the breaker (none after it opened); 5.5 s from the first chat
request to the exit, of which 0.4 s from the result line to the exit (3 s of failures are the
breaker's own threshold). Before the breaker was shared per server with backoff sleepers woken
and the run's server stopped after its logs were sent: 7.8 s and 2.4 s in the same conditions
(15.1 s from the first request under load 18 with the repository's earlier exit path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per chat request")
    ap.add_argument("flow_args", nargs="*",
                    default=["--priority", "1", "--models", "ollama/gemma3:4b"])
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.fake_ollama import FakeOllama

    with tempfile.TemporaryDirectory() as tmp, \
            FakeOllama(fault_rate=1.0, faults=("500",), latency_s=args.latency) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        env.update(PREFECT_HOME=str(Path(tmp) / "prefect-home"), DO_NOT_TRACK="1",
                   OLLAMA_HOST=server.host, PYTHONPATH=str(ROOT))
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "flows/ablations.py", *args.flow_args,
                                 "--data", str(Path(tmp) / "data"), "--json"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first, lines, printed = None, [], []

        def read() -> None:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("{"):
                    printed.append(time.monotonic())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while proc.poll() is None:
            if first is None and server.chat_requests():
                first = time.monotonic()
            time.sleep(0.02)
        end = time.monotonic()
        reader.join()
        out = [x for x in lines if x.startswith("{")]
        error = json.loads(out[-1]).get("error", "") if out else ""
        tripped = re.search(r"the last (\d+) requests all failed", error)
        print(json.dumps({
            "rc": proc.returncode, "wall_s": round(end - t0, 1),
            "first_request_to_exit_s": round(end - first, 1) if first else None,
            # of which: from the run's result line to its exit (the temporary server stopping)
            "result_to_exit_s": round(end - printed[0], 1) if printed else None,
            "chat_requests": len(server.chat_requests()),
            "requests_counted_by_breaker": int(tripped.group(1)) if tripped else None,
            "names_host": server.host in error,
        }))


if __name__ == "__main__":
    main()
