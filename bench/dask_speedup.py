"""Two Ollama servers behind two Dask workers vs one server, in one benchmark run.

Each stand-in server (tests/fake_ollama.py) answers after a fixed latency; the client-side
capacity is ``inference.ollama.concurrency`` (4), so one server completes at most
capacity / latency calls per second. The same command runs twice over the 1,440 embedded
stimuli, Prefect and the store included:

    python flows/ablations.py --priority 1 --models ollama/gemma3:4b --stage inference
      1. in one process against one server (today's path),
      2. with --dask against a loopback cluster: `dask scheduler` + two `dask worker` processes,
         each with its own server (OLLAMA_HOST).

Reports ratios measured in this one run (never timed assertions in tests):
* wall-time speed-up of run 2 over run 1 (target >= 1.7 x);
* run 2's calls per second while the servers were busy (first request to last answer) over the
  two servers' combined capacity / latency (target >= 0.85 x).

    python bench/dask_speedup.py [--latency 0.05] [--capacity 4] [--identities-per-cell 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = "ollama/gemma3:4b"


def _params(folder: Path, capacity: int, identities: int) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["inference"]["ollama"].update(concurrency=capacity)
    params["stimuli"]["identities_per_cell"] = identities
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _run(tmp: Path, params: Path, data: Path, *extra: str, **env: str) -> dict:
    from tests.dask_local import local_env

    cmd = [sys.executable, "flows/ablations.py", "--priority", "1", "--models", MODEL,
           "--stage", "inference", "--params", str(params), "--data", str(data), "--json", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=local_env(tmp, **env), capture_output=True,
                          text=True, timeout=3600)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _busy_window(servers, latency: float) -> tuple[int, float]:
    """Chat calls and seconds from the first request to the last answer, over ``servers``."""
    times = sorted(r["_t"] for s in servers for r in s.chat_requests())
    return len(times), times[-1] + latency - times[0]


def _stimuli(params: Path, data: Path) -> None:
    """Generate the embedded set once; both runs read a copy (neither pays for it)."""
    subprocess.run([sys.executable, "-m", "emoface", "stimuli", "generate", "--params",
                    str(params), "--data", str(data)], cwd=ROOT, check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--identities-per-cell", type=int, default=60,
                    help="60 = the full 1,440 stimuli; fewer for a quick look")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import shutil

    from tests.dask_local import dask_cluster
    from tests.fake_ollama import FakeOllama

    tmp = Path(tempfile.mkdtemp(prefix="emoface-dask-bench-"))
    params = _params(tmp / "cfg", args.capacity, args.identities_per_cell)
    _stimuli(params, tmp / "stimuli-src")
    datas = {}
    for name in ("one", "two"):
        datas[name] = tmp / name / "data"
        shutil.copytree(tmp / "stimuli-src", datas[name])

    with FakeOllama(latency_s=args.latency) as one:
        single = _run(tmp, params, datas["one"], OLLAMA_HOST=one.host)
        single_calls, single_busy = _busy_window([one], args.latency)
    with FakeOllama(latency_s=args.latency) as a, FakeOllama(latency_s=args.latency) as b, \
            dask_cluster(tmp / "dask", [a.host, b.host]) as (address, _):
        cluster = _run(tmp, params, datas["two"], "--dask", address)
        calls, busy = _busy_window([a, b], args.latency)
        split = [len(a.chat_requests()), len(b.chat_requests())]
        peak = [a.max_in_flight, b.max_in_flight]

    capacity_rate = 2 * args.capacity / args.latency
    out = {
        "calls": calls, "calls_per_server": split, "peak_in_flight_per_server": peak,
        "latency_s": args.latency, "capacity": args.capacity,
        "single_wall_s": single["wall_s"], "cluster_wall_s": cluster["wall_s"],
        "speedup": round(single["wall_s"] / cluster["wall_s"], 3),
        "single_busy_s": round(single_busy, 2), "cluster_busy_s": round(busy, 2),
        "busy_speedup": round(single_busy / busy, 3),
        "cluster_calls_per_s": round(calls / busy, 1),
        "combined_capacity_per_s": capacity_rate,
        "calls_per_s_over_capacity": round(calls / busy / capacity_rate, 3),
        "single_calls": single_calls,
        "targets": {"speedup_min": 1.7, "calls_per_s_over_capacity_min": 0.85},
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{calls} Ollama calls at {args.latency * 1000:.0f} ms, capacity {args.capacity}: "
              f"one server {single['wall_s']:.1f} s, two workers {cluster['wall_s']:.1f} s -> "
              f"speed-up {out['speedup']:.2f} x (busy windows {single_busy:.1f} / {busy:.1f} s "
              f"= {out['busy_speedup']:.2f} x); cluster {out['cluster_calls_per_s']:.0f} calls/s "
              f"= {out['calls_per_s_over_capacity']:.2f} x the combined capacity "
              f"({capacity_rate:.0f}/s); calls per server {split}, peak in flight {peak}")
    shutil.rmtree(tmp, ignore_errors=True)
    ok = out["speedup"] >= 1.7 and out["calls_per_s_over_capacity"] >= 0.85
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
