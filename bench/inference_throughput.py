"""Inference throughput against a stand-in server: the simulated backend with a fixed per-call
latency and a parallel capacity of 4, over the 1,440 embedded stimuli, context-carry.

Reports (as ratios measured in this one run, never as timed assertions):
* wall time of the production path (``emoface.inference.scheduler.run_condition``: batches, a thread
  pool per batch, validation and atomic writes) divided by the ideal ``calls x latency / 4``;
* the speed-up over a naive sequential loop that calls the backend once per turn.
Targets from the issue: <= 1.10 x ideal and >= 3.5 x the naive loop.

``--flow``: the real flow end to end instead (``flows/ablations.py --priority 1 --stage inference``
as a process, its own temporary Prefect server, Prefect tasks, commits) against the stand-in
Ollama server (``tests/fake_ollama.py``, ``--latency`` per chat request, default 50 ms, and
``--capacity`` requests in parallel, the client's ``inference.ollama.concurrency``), over the
1,440 embedded stimuli. Reported: chat requests per second between the first and the last
request the server received, over its capacity (``capacity / latency``: 80 calls/s by default);
target >= 0.9. The windows of five seconds in which the server got under half its capacity are
counted too (scheduling gaps). ``--fault-rate 0.3`` makes that share of the server's chat requests
fail (HTTP 500 or a dropped connection) and counts answered requests only, at the default backoff:
the flow's answers per second at 30 % faults over the same capacity (compare with a fault-free
run of the same command).

    python bench/inference_throughput.py [--latency 0.015] [--json]
    python bench/inference_throughput.py --flow [--latency 0.05] [--priority 1] [--fault-rate 0.3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=None,
                    help="seconds per call (default 0.015; with --flow 0.05)")
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--flow", action="store_true", help="run the flow, not only the engine")
    ap.add_argument("--priority", type=int, default=1, help="with --flow: the selection")
    ap.add_argument("--stimuli-per-cell", type=int, default=60,
                    help="with --flow: identities per race x gender (60: the 1,440 stimuli)")
    ap.add_argument("--fault-rate", type=float, default=0.0,
                    help="with --flow: share of chat requests that fail (500 or a dropped connection)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.flow:
        return flow_throughput(args)
    if args.latency is None:
        args.latency = 0.015

    import polars as pl

    from emoface.backends.simulated import SimulatedBackend, world_from_tables
    from emoface.config import InferenceParams, Params
    from emoface.inference.conditions import Condition
    from emoface.inference.engine import stimulus_inputs
    from emoface.inference.scheduler import run_condition
    from emoface.inference.store import PredictionStore
    from emoface.paths import DataPaths
    from emoface.prompts import conversations
    from emoface.stimuli.generate import generate_stimulus_set
    from emoface.stimuli.store import load_stimulus_set

    p = Params()
    tmp = Path(tempfile.mkdtemp())
    data = DataPaths(tmp / "data")
    generate_stimulus_set(p.study, p.stimuli, data.stimulus_set("embedded"))
    ss = load_stimulus_set(data.stimulus_set("embedded"), p.study)
    world = world_from_tables(ss.manifest, pl.read_parquet(ss.paths.latents), ss.norms)

    def server() -> SimulatedBackend:
        return SimulatedBackend("gemma3-4b", world, emotions=p.study.emotions,
                                latency_s=args.latency, capacity=args.capacity)

    condition = Condition()
    options = condition.options(InferenceParams())
    stims = stimulus_inputs(ss)
    calls = len(stims) * 3
    ideal = calls * args.latency / args.capacity

    t0 = time.perf_counter()
    rows, made = run_condition(server(), ss, condition, options, PredictionStore(data.root),
                               p.study.emotions, batch_size=p.inference.batch_size)
    engine_s = time.perf_counter() - t0
    assert made == calls and rows.height == len(stims)

    # naive: one call per turn, one at a time, nothing overlapped
    naive_backend = server()
    turns = conversations("context_carry", p.study.emotions)[0]
    t0 = time.perf_counter()
    for stim in stims:
        for i in range(len(turns)):
            naive_backend.converse(stim, turns[: i + 1][-1:], options)
    naive_s = time.perf_counter() - t0

    out = {"stimuli": len(stims), "calls": calls, "latency_s": args.latency,
           "capacity": args.capacity, "ideal_s": round(ideal, 2),
           "engine_s": round(engine_s, 2), "naive_s": round(naive_s, 2),
           "engine_over_ideal": round(engine_s / ideal, 3),
           "speedup_over_naive": round(naive_s / engine_s, 2),
           "targets": {"engine_over_ideal_max": 1.10, "speedup_over_naive_min": 3.5}}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{calls} calls at {args.latency * 1000:.0f} ms, capacity {args.capacity}: "
              f"engine {engine_s:.1f} s = {out['engine_over_ideal']:.3f} x ideal ({ideal:.1f} s); "
              f"naive loop {naive_s:.1f} s -> speed-up {out['speedup_over_naive']:.2f} x")
    ok = out["engine_over_ideal"] <= 1.10 and out["speedup_over_naive"] >= 3.5
    return 0 if ok else 1


def flow_throughput(args) -> int:
    """The flow as a user runs it, against the stand-in server: calls/s over its capacity."""
    import os
    import subprocess

    import yaml

    from tests.fake_ollama import FakeOllama

    latency = 0.05 if args.latency is None else args.latency
    tmp = Path(tempfile.mkdtemp())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["stimuli"]["identities_per_cell"] = args.stimuli_per_cell
    params["inference"]["ollama"]["concurrency"] = args.capacity
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), DO_NOT_TRACK="1",
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp / "prefect-results"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    faults = ({"fault_rate": args.fault_rate, "faults": ("500", "drop"), "seed": 11}
              if args.fault_rate else {})
    with FakeOllama(latency_s=latency, **faults) as server:
        env["OLLAMA_HOST"] = server.host
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "flows/ablations.py", "--priority", str(args.priority), "--models",
             "ollama/gemma3:4b", "--stage", "inference", "--params", str(tmp / "params.yaml"),
             "--data", str(tmp / "data"), "--json"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=3600)
        wall = time.perf_counter() - t0
        times = sorted(r["_t"] for r in server.chat_requests())
        failed = len(server.fault_log)
    if proc.returncode != 0 or len(times) < 2:
        print(f"the flow failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        return 1
    span = times[-1] - times[0]
    capacity = args.capacity / latency
    answered = len(times) - failed
    rate = answered / span
    engine = _engine_rate(tmp, latency, args.capacity)  # the same server, in process
    windows = [0] * (int(span // 5) + 1)
    for t in times:
        windows[int((t - times[0]) // 5)] += 1
    full = windows[:-1]  # the last window is partial
    low = sum(1 for n in full if n / 5 < capacity / 2)
    out = {"mode": "flow", "priority": args.priority, "calls": answered, "latency_s": latency,
           "fault_rate": args.fault_rate, "requests": len(times),
           "requests_per_answer": round(len(times) / answered, 3),
           "capacity_calls_per_s": capacity, "flow_wall_s": round(wall, 1),
           "inference_window_s": round(span, 1), "calls_per_s": round(rate, 1),
           "of_capacity": round(rate / capacity, 3), "windows_5s": len(full),
           "windows_under_half_capacity": low, "calls_per_window": windows,
           "engine_calls_per_s": round(engine, 1),
           "engine_of_capacity": round(engine / capacity, 3),
           "flow_over_engine": round(rate / engine, 3),
           "targets": {"of_capacity_min": 0.9}}
    line = (f"flow --priority {args.priority}: {answered} calls at {latency * 1000:.0f} ms"
            + (f" ({len(times)} requests at {args.fault_rate:.0%} faults)" if failed else "")
            + ", "
            f"capacity {capacity:.0f} calls/s: {rate:.1f} calls/s over the inference window "
            f"({span:.1f} s of {wall:.1f} s) = {out['of_capacity']:.3f} of capacity; "
            f"{low} of {len(full)} five-second windows under half capacity; the in-process "
            f"engine against the same server: {engine:.1f} calls/s = "
            f"{out['engine_of_capacity']:.3f} of capacity (flow / engine "
            f"{out['flow_over_engine']:.3f})")
    print(json.dumps(out) if args.json else line)
    return 0 if out["of_capacity"] >= 0.9 else 1


def _engine_rate(tmp: Path, latency: float, capacity: int) -> float:
    """Calls/s of the in-process engine (``run_condition``, the baseline condition) against a
    fresh stand-in server with the same latency: what the flow is compared with."""
    from emoface.backends import make_backend
    from emoface.config import load_params
    from emoface.inference.conditions import Condition
    from emoface.inference.scheduler import run_condition
    from emoface.inference.store import PredictionStore
    from emoface.paths import DataPaths
    from emoface.stimuli.store import load_stimulus_set
    from tests.fake_ollama import FakeOllama

    p = load_params(tmp / "params.yaml")
    ss = load_stimulus_set(DataPaths(tmp / "data").stimulus_set("embedded"), p.study)
    with FakeOllama(latency_s=latency) as server:
        inf = p.inference.model_copy(update={"ollama": p.inference.ollama.model_copy(
            update={"host": server.host, "concurrency": capacity})})
        be = make_backend("ollama/gemma3:4b", inf, emotions=p.study.emotions)
        c = Condition()
        run_condition(be, ss, c, c.options(inf), PredictionStore(tmp / "engine"),
                      p.study.emotions, batch_size=p.inference.batch_size)
        times = sorted(r["_t"] for r in server.chat_requests())
    return len(times) / (times[-1] - times[0])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
