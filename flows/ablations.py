"""Plan and run the ablations.

    python flows/ablations.py --priority 1            # A1 + A2 and what they need
    python flows/ablations.py --tier complete         # minimal | competitive | complete | extended
    python flows/ablations.py --only A5,A8 --models ollama/gemma3:4b
    python flows/ablations.py --tier complete --dry-run [--json]
    python flows/ablations.py --tier complete --dask tcp://SCHEDULER:8786   # on a Dask cluster

One Prefect flow run per invocation (a subflow for the baseline and per ablation, tasks per
inference batch and per analysis). Exit status 0 only when every selected ablation completed; a
failed run says which ablation and batch failed, and running the same command resumes it.
``--stage inference|analyses`` runs half of the same code path (the DVC stages use it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="flows/ablations.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--priority", type=int, help="every ablation of priority <= N (default 1)")
    from emoface.ablations import tiers

    sel.add_argument("--tier", choices=list(tiers()), help="a tier of the ablation registry")
    sel.add_argument("--only", help="comma-separated ablation ids, e.g. A5,A8")
    ap.add_argument("--models", help="comma-separated backend/model ids (default: params.yaml)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    ap.add_argument("--json", action="store_true", help="print the plan / run summary as JSON")
    from emoface.inference.remote import CLUSTER_BACKENDS

    ap.add_argument("--dask", metavar="ADDRESS",
                    help=f"run the inference batches of {'/'.join(CLUSTER_BACKENDS)} models on "
                         "this Dask scheduler, e.g. tcp://HOST:8786 (default: execution.dask in "
                         "params.yaml; README: More than one machine)")
    ap.add_argument("--stage", choices=["all", "inference", "analyses"], default="all")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--wait", action="store_true",
                    help="if another run holds the data folder, wait for it instead of refusing")
    ap.add_argument("--debug", action="store_true",
                    help="show full tracebacks of expected errors too (backend down, bad input)")
    return ap.parse_args(argv)


def check_args(args: argparse.Namespace, params):
    """Every command-line value checked as params.yaml's are (docs/params.md), before anything
    runs: a bad one raises EmofaceError/ValueError, one line naming the flag (exit status 2).
    Returns (params with --dask applied, ablation ids, model ids, the data folder)."""
    from emoface.ablations import registry, select
    from emoface.config import ExecutionParams, parse_model_ids
    from emoface.errors import ConfigError
    from emoface.paths import DataPaths, check_data_root

    top = max(a.priority for a in registry().values())
    if args.priority is not None and not 1 <= args.priority <= top:
        raise ConfigError(f"--priority {args.priority}: give a priority from 1 to {top} "
                          "(every ablation of that priority or lower)")
    if args.dask:
        try:
            execution = ExecutionParams.model_validate(
                {**params.execution.model_dump(), "dask": args.dask})
        except ValueError:
            raise ConfigError(f"--dask {args.dask!r}: give the scheduler address, e.g. "
                              "tcp://HOST:8786") from None
        params = params.model_copy(update={"execution": execution})
    only = None
    if args.only is not None:
        only = [a.strip() for a in args.only.split(",")]
        if not any(only) or not all(only):
            raise ConfigError(f"--only {args.only!r}: an empty ablation id (a stray comma?); "
                              "give ids separated by commas, e.g. A5,A8")
    ids = select(priority=args.priority, tier=args.tier, only=only)
    models = parse_model_ids(args.models) if args.models is not None else list(params.models.study)
    data = DataPaths(check_data_root(args.data))
    return params, ids, models, data


def _quiet_prefect_env() -> None:
    """Settings that must hold even when run from outside the repository (prefect.toml is read
    from the working directory); an explicit environment variable still wins."""
    for key, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(ROOT / ".prefect" / "storage"),
        # one INFO line per task run (hundreds per run) drowns the flow-level log; task states
        # are still recorded and shown in the UI
        "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "WARNING",
    }.items():
        os.environ.setdefault(key, value)


def print_plan(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    from emoface.ablations import REGISTRY

    console = Console(width=max(130, Console().width))
    t = Table(title="Ablations, in the plan's execution order")
    for col in ("id", "name", "priority", "paper section", "conditions", "models"):
        t.add_column(col)
    for aid in summary["ablations"]:
        a = REGISTRY[aid]
        n = sum(1 for c in summary["conditions"] if aid in c["needed_by"])
        t.add_row(aid, a.name, str(a.priority), a.paper_section, str(n),
                  ", ".join(summary["models_by_ablation"].get(aid, [])))
    console.print(t)
    c = Table(title="Unique work (after dedupe)")
    for col in ("model", "condition", "stimuli", "needed by", "calls", "done"):
        c.add_column(col, justify="right" if col in ("calls", "done") else "left")
    for row in summary["conditions"]:
        c.add_row(row["model_id"], row["condition_id"], row["stimulus_set"],
                  ",".join(row["needed_by"]), f"{row['calls']:,}" if row["stimuli_known"]
                  else "? (set not imported)", f"{row['calls_done']:,}")
    console.print(c)
    workers = summary.get("workers") or {}
    lat = "; ".join(f"{m}: {v['seconds_per_call'] * 1000:.1f} ms/call ({v['source']})"
                    + (f" on {workers[m]} Dask worker(s)" if m in workers else "")
                    for m, v in summary["latency"].items())
    runs = summary["analyses_to_run"]
    measured = sum(1 for v in runs.values() if v["source"] == "measured")
    ana = (f"{len(runs)} to run, {measured} timed in earlier runs here, the others at a stated "
           "default per ablation; + the report" if runs else "none to run")
    console.print(f"calls: naive sum {summary['calls_total']:,} -> unique {summary['calls_unique']:,}"
                  f"; already done {summary['calls_done']:,}; to run "
                  f"{summary['calls_remaining']:,}\nestimated time: "
                  f"{summary['estimated_seconds'] / 60:.1f} min = inference "
                  f"{summary['estimated_inference_seconds'] / 60:.1f} min ({lat}) + analyses "
                  f"{summary['estimated_analysis_seconds'] / 60:.1f} min ({ana})",
                  highlight=False)
    for line in summary["warnings"]:
        console.print(line, highlight=False, style="bold yellow", soft_wrap=True)


def announce_models(summary: dict) -> None:
    """At the start of a run (stderr): per ablation the models it uses, then one warning line per
    ablation that still uses a simulated model while others are real."""
    for aid, models in summary["models_by_ablation"].items():
        print(f"{aid}: {', '.join(models)}", file=sys.stderr)
    for line in summary["warnings"]:
        print(line, file=sys.stderr)


def wait_for_records(ids: set[str], timeout_s: float = 60.0) -> int:
    """Block until the API reports every launched task run in a final state; returns how many
    are recorded. Without this, a temporary server killed at exit loses task-run records."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    deadline, recorded = time.monotonic() + timeout_s, 0
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            recorded = 0
            chunk = sorted(ids)
            for i in range(0, len(chunk), 200):
                runs = client.read_task_runs(task_run_filter=TaskRunFilter(
                    id=TaskRunFilterId(any_=[uuid.UUID(x) for x in chunk[i:i + 200]])),
                    limit=200)
                recorded += sum(1 for r in runs if r.state is not None and r.state.is_final())
            if recorded >= len(ids):
                break
            time.sleep(0.25)
    return recorded


def _up_to_date(plan, params, data, ids: list[str], inference: bool, analyses: bool,
                as_json: bool, calls_remaining: int) -> int | None:
    """Exit status 0 without starting Prefect when a run would change nothing: every batch is
    current and verifies, every analysis key and the report are unchanged (one check each)."""
    from emoface.uptodate import nothing_to_do

    t0 = time.perf_counter()
    outcomes = nothing_to_do(plan, params, data, inference=inference, analyses=analyses,
                             calls_remaining=calls_remaining)
    if outcomes is None:
        return None
    wall = time.perf_counter() - t0
    if as_json:
        print(json.dumps({"ok": True, "wall_s": round(wall, 1), "task_runs": 0,
                          "task_runs_recorded": 0, "ablations": ids, "calls": 0,
                          "outcomes": outcomes, "up_to_date": True}))
    else:
        print(f"nothing to do ({wall:.1f} s): every batch, analysis and the report of "
              f"{len(ids)} ablation(s) is current; report: {data.root / 'results' / 'report.md'}")
    return 0


def check_backends(summary: dict, params) -> list[str]:
    """Preflight every model of the plan (server up, model pulled; seconds): the ones with calls
    to make, and the ones whose stored batches a no-change re-run checks against their model's
    digest, so a complete store with the server down is one line too, before Prefect starts."""
    from emoface.inference.preflight import preflight

    todo = [c["model_id"] for c in summary["conditions"]]
    if params.execution.dask:
        from emoface.inference.remote import cluster_backend

        # on a cluster, Ollama/MLX models are checked by the workers that serve them (their own
        # OLLAMA_HOST), not from this machine
        todo = [m for m in todo if not cluster_backend(m)]
    return preflight(todo, params.inference, emotions=params.study.emotions)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from emoface.ablations import build_plan
    from emoface.config import load_params
    from emoface.errors import EmofaceError
    from emoface.planning import summarize

    try:
        params = load_params(args.params)
        params, ids, models, data = check_args(args, params)
        plan = build_plan(params, ids, models)
        workers = None
        if args.dry_run and params.execution.dask:
            from emoface.inference.remote import cluster_backend
            from tasks.dask_scheduler import workers_per_model

            if any(cluster_backend(m) for m in models):
                workers = workers_per_model(params.execution.dask, models)
                if workers is None:
                    print(f"note: the Dask scheduler at {params.execution.dask} did not answer; "
                          "the estimate is for one worker per model", file=sys.stderr)
        summary = summarize(plan, params, data, workers, analyses=args.stage != "inference")
    except (EmofaceError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_plan(summary, args.json)
        return 0
    from emoface.runlock import acquire, end_leftover_server

    waited = []

    def on_wait(holder: dict) -> None:
        waited.append(holder)
        print(f"waiting: {data.root} is in use by PID {holder.get('pid', '?')} on "
              f"{holder.get('host', '?')} since {holder.get('started', '?')}", file=sys.stderr)

    try:  # one writing run per data folder; released by the kernel however this process ends
        lock = acquire(data.root, wait=args.wait, on_wait=on_wait)
        if waited:  # the holder has stored work meanwhile: plan again from what is there now
            summary = summarize(plan, params, data, None)
    except EmofaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if (ended := end_leftover_server(lock.previous)) is not None:
        print(f"note: ended the temporary Prefect server (PID {ended}) a killed run left behind",
              file=sys.stderr)
    try:
        if args.stage in ("all", "inference"):
            check_backends(summary, params)
        else:  # the analyses alone cannot redo a batch: verify every input as the readers will
            from emoface.uptodate import verify_inputs

            verify_inputs(plan.unique, data)
    except EmofaceError as err:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2
    from emoface.io import sweep_temporaries

    # what a killed run left behind (temporary files of any writer; a set aside stimulus set is
    # put back), in every folder the pipeline writes
    sweep_temporaries([data.stimuli_root, data.root / "predictions", data.root / "hidden",
                       data.root / "results"])

    inference, analyses = args.stage in ("all", "inference"), args.stage in ("all", "analyses")
    if (done := _up_to_date(plan, params, data, ids, inference, analyses, args.json,
                            summary["calls_remaining"])) is not None:
        return done
    announce_models(summary)  # the run starts: its models per ablation, simulated ones flagged
    _quiet_prefect_env()
    from flows.runtime import start_server

    # this run's own temporary server (unless PREFECT_API_URL names one): it dies with the run
    start_server(on_started=lambda pid, port: lock.update(server_pid=pid, server_port=port))
    from prefect import tags

    from flows.console import quiet_expected_errors
    from flows.pipeline import ablations_flow
    from tasks import progress, record

    if not args.debug:
        quiet_expected_errors()

    selection = (f"only {args.only}" if args.only else f"tier {args.tier}" if args.tier
                 else f"priority {args.priority or 1}") + f" | {','.join(models)}"
    if inference and sys.stderr.isatty():
        # the bar advances once per rated stimulus (one conversation set), hidden states excluded
        todo = sum((c["calls"] - c["calls_done"]) // c["calls_per_stimulus"]
                   for c in summary["conditions"] if c["kind"] == "predictions")
        progress.start(max(todo, 1), "inference (stimuli x conditions)")
    t0 = time.perf_counter()
    try:
        with tags(f"invocation-{uuid.uuid4().hex[:8]}"):
            state = ablations_flow(plan, params, str(data.root), selection, inference, analyses,
                                   return_state=True)
    finally:
        progress.stop()
    wall = time.perf_counter() - t0
    recorded = wait_for_records(record.launched)
    ok = state.is_completed()
    result = state.result(raise_on_failure=False)
    out = {"ok": ok, "wall_s": round(wall, 1), "task_runs": len(record.launched),
           "task_runs_recorded": recorded, "ablations": ids}
    if ok:
        out.update(calls=result["calls"], calls_by_flow=result["calls_by_flow"],
                   outcomes={s["ablation"]: s.get("outcome") for s in result["ablations"]})
    else:
        out["error"] = str(result)
    if args.json:
        print(json.dumps(out))
    elif ok:
        print(f"done in {wall:.1f} s: {len(ids)} ablation(s), {out['calls']} backend calls, "
              f"{recorded}/{len(record.launched)} task runs recorded; report: "
              f"{data.root / 'results' / 'report.md'}")
    else:
        print(f"FAILED after {wall:.1f} s: {result}\nRun the same command again to resume.",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from flows.runtime import run_main

    run_main(main)  # SIGINT / SIGTERM: one line, exit status 130 / 143
