"""The cost of a re-run with nothing changed, as a ratio of the first run, in one benchmark run.

For each selection (``--priority 1`` and ``--tier complete`` by default) on the default
``params.yaml`` (1,440 embedded stimuli, simulated models), in a fresh data folder: run
``flows/ablations.py`` once (every call made, every analysis run), then again with nothing changed
(no calls; every batch and analysis found current), and report both wall times (the whole process,
as a user waits for it) and their ratio. Target from issue 10: re-run <= 0.25 x the first run.
Both runs use the same warmed-up Prefect home (a temporary server per process, as a user without
``prefect server start`` has), so the first run does not pay for creating the database.

    python bench/rerun_cost.py [--selections "--priority 1" "--tier complete"] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "flows/ablations.py", *args, "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--selections", nargs="+", default=["--priority 1", "--tier complete"])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="emoface-rerun-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), DO_NOT_TRACK="1",
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp / "prefect-results"))
    # warm-up: create the Prefect database once (a user's ~/.prefect exists after the first run)
    subprocess.run([sys.executable, "-c", "from prefect import flow\n"
                    "flow(name='warm-up')(lambda: None)()"], cwd=ROOT, env=env,
                   capture_output=True, check=True)
    rows = []
    try:
        for i, sel in enumerate(args.selections):
            data = tmp / f"data-{i}"
            base = [*shlex.split(sel), "--params", str(args.params), "--data", str(data)]
            first, out1 = _run(base, env)
            again, out2 = _run(base, env)
            rows.append({"selection": sel, "first_s": round(first, 1), "rerun_s": round(again, 1),
                         "ratio": round(again / first, 3), "first_calls": out1["calls"],
                         "rerun_calls": out2["calls"], "rerun_task_runs": out2["task_runs"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['selection']:>16}: first {r['first_s']:6.1f} s ({r['first_calls']} calls), "
                  f"no-change re-run {r['rerun_s']:5.1f} s ({r['rerun_calls']} calls, "
                  f"{r['rerun_task_runs']} task runs): ratio {r['ratio']:.3f} (target <= 0.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
