"""A Dask cluster on loopback for tests and benchmarks: `dask scheduler` plus one `dask worker`
per Ollama host (each worker's OLLAMA_HOST), as separate processes, all stopped on exit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def local_env(tmp: Path, *, temporary_server: bool = True, **extra: str) -> dict[str, str]:
    """This environment without an Ollama host, Prefect state under ``tmp``; Prefect's temporary
    server unless ``temporary_server`` is False (then the test session's shared one)."""
    from tests.prefect_shared import flow_env

    env = flow_env(tmp, temporary_server=temporary_server)
    env.update(# Shared CI machines here run at load 20 on 2 cores: a worker's event loop was seen
               # stalled for 40 s, past Dask's 30 s TCP timeout, and the scheduler dropped it.
               DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP="300s",
               DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="120s", **extra)
    return env


@contextmanager
def dask_cluster(tmp: Path, worker_hosts: list[str], *, nthreads: int = 4,
                 env: dict[str, str] | None = None, worker_args: list[list[str]] | None = None,
                 host_var: str = "OLLAMA_HOST",
                 ) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """Yield the scheduler address and the worker processes (one per Ollama host; worker i gets
    the extra command-line arguments ``worker_args[i]``, e.g. ``["--resources", "ollama=1"]``).
    ``host_var``: the variable that gives each worker its host (``OPENAI_BASE_URL`` for
    OpenAI-compatible servers)."""
    tmp.mkdir(parents=True, exist_ok=True)
    sched_file = tmp / "scheduler.json"
    procs: list[subprocess.Popen] = []
    logs = tmp / "dask-logs"
    logs.mkdir(exist_ok=True)

    def start(args: list[str], name: str, **extra: str) -> subprocess.Popen:
        with open(logs / f"{name}.log", "w") as out:
            p = subprocess.Popen([sys.executable, "-m", *args], cwd=tmp,
                                 env={**local_env(tmp, **extra), **(env or {})},
                                 stdout=out, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
               "--no-dashboard", "--scheduler-file", str(sched_file)], "scheduler")
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError((logs / "scheduler.log").read_text())
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        workers = [start(["distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                          "--nthreads", str(nthreads), "--no-nanny", "--no-dashboard",
                          "--name", f"w{i}", "--local-directory", str(tmp / f"w{i}"),
                          *((worker_args or [])[i] if i < len(worker_args or []) else [])],
                         f"worker{i}", **{host_var: host})
                   for i, host in enumerate(worker_hosts)]
        if worker_hosts:
            from distributed import Client

            with Client(address, timeout="60s") as client:
                client.wait_for_workers(len(worker_hosts), timeout=90)
        yield address, workers
    finally:
        stop(procs)


def stop(procs: list[subprocess.Popen], grace_s: float = 5.0) -> None:
    """SIGTERM to every process, one shared grace period, then SIGKILL to what is left. (A
    worker whose close is cancelled, ``CancelledError`` in its log, never exits on SIGTERM;
    waiting for each in turn cost 15 s per such worker.)"""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
