"""Inference throughput against a stand-in server: the simulated backend with a fixed per-call
latency and a parallel capacity of 4, over the 1,440 embedded stimuli, context-carry.

Reports (as ratios measured in this one run, never as timed assertions):
* wall time of the production path (``emoface.inference.scheduler.run_condition``: batches, a thread
  pool per batch, validation and atomic writes) divided by the ideal ``calls x latency / 4``;
* the speed-up over a naive sequential loop that calls the backend once per turn.
Targets from the issue: <= 1.10 x ideal and >= 3.5 x the naive loop.

    python bench/inference_throughput.py [--latency 0.015] [--json]
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
    ap.add_argument("--latency", type=float, default=0.015)
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

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


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
