"""flows/ablations.py --dask on a real Dask cluster on loopback: `dask scheduler` and two
`dask worker` processes, each worker pointed (OLLAMA_HOST) at its own stand-in Ollama server.

Proves: both servers are used and never see more than their capacity; the rows equal a
single-process run; a worker killed with kill -9 mid-run loses nothing (every row exactly once,
duplicate calls bounded by the batches it held); two servers with different weights stop the run
naming both hosts; a cluster without workers fails within the stated timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from emoface.config import load_params
from emoface.inference.service import run_condition_for
from emoface.inference.store import PredictionStore, model_slug
from emoface.paths import DataPaths
from tests.conftest import REPO, write_small_project_params
from tests.dask_local import dask_cluster, local_env
from tests.fake_ollama import FakeOllama

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("prefect_dask")
from distributed import Client  # noqa: E402 - after the skip: dask is an optional extra

from tasks.worker import profiler_deadlocks, profiler_running  # noqa: E402

DIGEST = "a2af6cc3eb7f" + "0" * 52
MODEL = "ollama/gemma3:4b"
BASELINE = "context_carry_t0_r1"
CAPACITY = 4  # inference.ollama.concurrency: calls one server may have in flight
BATCH = 8  # 48 stimuli -> 6 batches


def _project(tmp: Path, **execution) -> tuple[Path, Path]:
    params_file = write_small_project_params(tmp / "cfg")
    params = yaml.safe_load(params_file.read_text())
    params["inference"]["batch_size"] = BATCH
    params["inference"]["ollama"].update(concurrency=CAPACITY, retries=1, backoff_s=0.1)
    params["execution"] = {"dask": None, "worker_timeout_s": 60, **execution}
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    return params_file, tmp / "data"


def _flow_cmd(params: Path, data: Path, *extra: str, only: str = "A5") -> list[str]:
    return [sys.executable, "flows/ablations.py", "--only", only, "--models", MODEL, "--stage",
            "inference", "--params", str(params), "--data", str(data), "--json", *extra]


def _out(stdout: str) -> dict:
    lines = [x for x in stdout.splitlines() if x.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def run_flow(tmp: Path, params: Path, data: Path, *extra: str, only: str = "A5", **env: str):
    proc = subprocess.run(_flow_cmd(params, data, *extra, only=only), cwd=REPO,
                          env=local_env(tmp, temporary_server=False, **env), capture_output=True,
                          text=True, timeout=600)
    return proc.returncode, _out(proc.stdout), proc.stderr


def baseline_rows(data: Path, params: Path) -> pl.DataFrame:
    folder = data / "predictions" / "embedded" / BASELINE / model_slug(MODEL)
    return PredictionStore(data).read(folder, load_params(params).study.emotions,
                                      n_batches=48 // BATCH).sort("stimulus_id")


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    """Two stand-in Ollama servers and a cluster with one worker on each, shared by the tests
    that leave both as they found them (each reads only the requests its own run sent)."""
    tmp = tmp_path_factory.mktemp("two-servers")
    with FakeOllama(latency_s=0.02) as a, FakeOllama(latency_s=0.02) as b, \
            dask_cluster(tmp / "dask", [a.host, b.host]) as (address, _):
        yield a, b, address


def test_two_workers_two_servers_same_rows_as_one_process(tmp_path, two_servers):
    a, b, address = two_servers
    params, data = _project(tmp_path / "cluster")
    before = {a.host: len(a.chat_requests()), b.host: len(b.chat_requests())}
    rc, out, err = run_flow(tmp_path, params, data, "--dask", address)
    assert rc == 0, err[-4000:]
    served = {a.host: len(a.chat_requests()) - before[a.host],
              b.host: len(b.chat_requests()) - before[b.host]}
    in_flight = (a.max_in_flight, b.max_in_flight)  # (the most ever, this run's included)
    with Client(address, timeout="60s") as client:  # the flow's worker plugin, on both
        profiling = client.run(profiler_running)
    assert len(profiling) == 2
    assert set(profiling.values()) == {not profiler_deadlocks()}, profiling
    assert out["calls"] == 48 * 3 + 48  # the Ollama model on the cluster + FER in the flow
    assert sum(served.values()) == 48 * 3 and min(served.values()) > 0, served
    assert max(in_flight) <= CAPACITY, in_flight
    assert out["task_runs_recorded"] == out["task_runs"] > 0, out  # workers' task runs recorded
    cluster_rows = baseline_rows(data, params)
    hosts = set(cluster_rows["served_by"].to_list())
    assert len(hosts) == 2 and all(any(h in s for s in hosts) for h in (a.host, b.host)), hosts
    assert all(s.startswith("tcp://127.0.0.1:") for s in hosts)

    # the same work in one process (the library path, no cluster), against a third server
    ref = load_params(params)
    with FakeOllama() as c:
        ref = ref.model_copy(update={"inference": ref.inference.model_copy(update={
            "ollama": ref.inference.ollama.model_copy(update={"host": c.host})})})
        ref_data = tmp_path / "single" / "data"
        shutil.copytree(data / "stimuli", ref_data / "stimuli")
        summary = run_condition_for(ref, DataPaths(ref_data), MODEL, protocol="context_carry")
    assert summary["calls"] == 48 * 3
    local_rows = baseline_rows(ref_data, params)
    # where, how fast and after how many tries (a timed-out request retried on a loaded machine
    # adds an attempt, as in the OpenAI cluster test); everything else must agree
    provenance = ["served_by", "latency_s", "attempts"]
    assert cluster_rows.drop(provenance).equals(local_rows.drop(provenance))
    assert all(c.host in s for s in local_rows["served_by"].to_list())
    folder = Path(BASELINE) / model_slug(MODEL)
    got = PredictionStore(data).read_logits(data / "predictions/embedded" / folder)
    want = PredictionStore(ref_data).read_logits(ref_data / "predictions/embedded" / folder)
    assert got.keys() == want.keys()
    for k in got:
        np.testing.assert_array_equal(got[k], want[k])


def test_every_ablation_shares_one_cluster_queue_and_dependent_work_waits(tmp_path,
                                                                          two_servers):
    """A1 (text-only with the model's own baseline labels) and A2 (single-shot): all of their
    Ollama batches run in the one inference stage, none in the per-ablation subflows, and the
    text-only batches are sent only after every baseline batch is committed."""
    a, b, address = two_servers
    params, data = _project(tmp_path / "p")
    seen_a, seen_b = len(a.chat_requests()), len(b.chat_requests())
    rc, out, err = run_flow(tmp_path, params, data, "--dask", address, only="A1,A2")
    requests = a.chat_requests()[seen_a:] + b.chat_requests()[seen_b:]  # this run's
    assert rc == 0, err[-4000:]
    # baseline 3 calls, text-only 2, single-shot 1 per stimulus on the cluster; the FER
    # classifier (48) in the flow process, in the same inference subflow
    assert out["calls_by_flow"] == {"inference": 48 * (3 + 2 + 1) + 48, "baseline": 0,
                                    "A1": 0, "A2": 0}, out
    assert len(requests) == 48 * 6
    with_image = [r["_t"] for r in requests if any(m.get("images") for m in r["messages"])]
    text_only = [r["_t"] for r in requests if not any(m.get("images") for m in r["messages"])]
    assert len(text_only) == 48 * 2 and len(with_image) == 48 * 4
    baseline = [r["_t"] for r in requests  # with the image, not single-shot (a JSON format)
                if any(m.get("images") for m in r["messages"]) and not r.get("format")]
    assert len(baseline) == 48 * 3
    assert min(text_only) > max(baseline)  # labels exist only once the whole baseline does
    folder = data / "predictions/embedded/text_only-baseline_t0_r1" / model_slug(MODEL)
    rows = PredictionStore(data).read(folder, load_params(params).study.emotions,
                                      n_batches=48 // BATCH)
    assert rows.height == 48 and rows["label_given"].null_count() == 0


def test_resources_keep_ollama_batches_on_the_workers_that_declare_them(tmp_path):
    """README: once a worker declares `--resources "ollama=1"`, Ollama batches run only on
    workers that declare it; the dry run counts those workers in its estimate."""
    params, data = _project(tmp_path / "p")
    with FakeOllama(latency_s=0.01) as a, FakeOllama(latency_s=0.01) as b, \
            dask_cluster(tmp_path / "dask", [a.host, b.host],
                         worker_args=[["--resources", "ollama=1"], []]) as (address, _):
        dry = subprocess.run(_flow_cmd(params, data, "--dask", address, "--dry-run", only="A2"),
                             cwd=REPO, env=local_env(tmp_path, temporary_server=False),
                             capture_output=True, text=True, timeout=300)
        rc, out, err = run_flow(tmp_path, params, data, "--dask", address, only="A2")
        served = (len(a.chat_requests()), len(b.chat_requests()))
    assert dry.returncode == 0 and json.loads(dry.stdout)["workers"] == {MODEL: 1}, dry.stderr
    assert rc == 0, err[-4000:]
    assert served == (48 * (3 + 1), 0)  # baseline + single-shot, all on the declaring worker
    rows = baseline_rows(data, params)
    assert all(a.host in s for s in rows["served_by"].to_list())


def test_workers_report_their_task_runs_to_the_server_in_prefect_api_url(shared_prefect,
                                                                         tmp_path):
    """README: with PREFECT_API_URL set for the flow and every worker, the workers' batch task
    runs are recorded by that server, under the run's `inference` subflow."""
    import httpx

    url = shared_prefect.url
    params, data = _project(tmp_path / "p")
    with FakeOllama() as a, FakeOllama() as b, \
            dask_cluster(tmp_path / "dask", [a.host, b.host], env={"PREFECT_API_URL": url}) \
            as (address, _):
        rc, out, err = run_flow(tmp_path, params, data, "--dask", address, PREFECT_API_URL=url)
    assert rc == 0, err[-4000:]
    assert out["task_runs_recorded"] == out["task_runs"] > 0, out
    with httpx.Client(base_url=url, timeout=30) as api:
        flow_runs = shared_prefect.flow_runs(api)  # this test's, and their task runs
        task_runs = shared_prefect.of_runs(api, "task_runs", [f["id"] for f in flow_runs])
    stage = [f for f in flow_runs if f["name"].startswith("inference")]
    assert len(stage) == 1 and stage[0]["state_type"] == "COMPLETED", flow_runs
    remote = [t for t in task_runs if " | remote b" in t["name"]]
    assert len(remote) == 48 // BATCH  # A5's Ollama work is the baseline: 6 batches
    assert {t["flow_run_id"] for t in remote} == {stage[0]["id"]}
    assert {t["state_type"] for t in remote} == {"COMPLETED"}


def test_worker_killed_mid_run_loses_nothing(tmp_path):
    params, data = _project(tmp_path / "p")
    with FakeOllama(latency_s=0.15) as a, FakeOllama(latency_s=0.15) as b, \
            dask_cluster(tmp_path / "dask", [a.host, b.host]) as (address, workers):
        proc = subprocess.Popen(_flow_cmd(params, data, "--dask", address), cwd=REPO,
                                env=local_env(tmp_path, temporary_server=False),
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while len(a.chat_requests()) < 6:  # worker 0 is mid-batch
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(workers[0].pid, signal.SIGKILL)
        before_kill = len(a.chat_requests())
        stdout, stderr = proc.communicate(timeout=300)
        total = len(a.chat_requests()) + len(b.chat_requests())
        touched = _batches_touched(a, data)
    assert proc.returncode == 0, stderr[-4000:]
    out = _out(stdout)
    rows = baseline_rows(data, params)  # validated: one row per stimulus, nothing missing
    assert rows.height == 48 and rows["stimulus_id"].n_unique() == 48
    assert out["calls"] == 48 * 3 + 48  # what the committed rows say was called
    duplicates = total - 48 * 3
    # re-run work is at most the batches that were on the killed worker
    assert 0 <= duplicates <= len(touched) * BATCH * 3, (duplicates, touched, before_kill)
    assert set(rows["served_by"].to_list()) and any(b.host in s for s in rows["served_by"])


def _batches_touched(server: FakeOllama, data: Path) -> set[int]:
    """Which batches a server saw a request of (images travel as base64 of the file bytes)."""
    import base64

    manifest = pl.read_csv(data / "stimuli/embedded/manifest.csv")
    index = {}
    for i, f in enumerate(manifest["file"].to_list()):
        raw = (data / "stimuli/embedded" / f).read_bytes()
        index[base64.b64encode(raw).decode()] = i // BATCH
    seen = set()
    for r in server.chat_requests():
        for m in r.get("messages", []):
            for img in m.get("images") or []:
                if img in index:
                    seen.add(index[img])
    return seen


def test_servers_with_different_weights_stop_the_run_naming_both(tmp_path):
    params, data = _project(tmp_path / "p")
    with FakeOllama() as a, FakeOllama(models={"gemma3:4b": "c" * 64}) as b, \
            dask_cluster(tmp_path / "dask", [a.host, b.host]) as (address, _):
        rc, out, err = run_flow(tmp_path, params, data, "--dask", address)
    assert rc == 1 and not out["ok"], err[-3000:]
    assert a.host in out["error"] and b.host in out["error"], out["error"]
    assert "results from different weights must not mix" in out["error"]
    folder = data / "predictions/embedded" / BASELINE / model_slug(MODEL)
    stored = list(folder.glob("b*.parquet")) if folder.exists() else []
    if stored:  # batches committed before the mismatch came from one digest only
        digests = pl.concat([pl.read_parquet(f) for f in stored])["model_digest"].unique()
        assert digests.len() == 1


def test_a_cluster_without_workers_fails_within_the_timeout(tmp_path):
    params, data = _project(tmp_path / "p", worker_timeout_s=3)
    with dask_cluster(tmp_path / "dask", []) as (address, _):
        t0 = time.monotonic()
        rc, out, err = run_flow(tmp_path, params, data, "--dask", address)
        took = time.monotonic() - t0
    assert rc == 1 and f"no Dask worker able to run {MODEL} joined {address} within 3 s" in out[
        "error"], (out, err[-2000:])
    assert took < 120  # process start + the 3 s wait, never forever


def test_an_unreachable_scheduler_is_one_clear_error():
    from emoface.config import ExecutionParams
    from tasks.cluster import Cluster, ClusterError

    with pytest.raises(ClusterError, match=r"cannot reach the Dask scheduler at "
                                           r"tcp://127\.0\.0\.1:9 within 2 s.*dask scheduler"):
        with Cluster(ExecutionParams(dask="tcp://127.0.0.1:9", worker_timeout_s=2)):
            pass


def test_the_profiler_is_stopped_only_where_cpython_deadlocks_in_it():
    """CPython #106883 (sys._current_frames vs the GC) was fixed in 3.12."""
    assert profiler_deadlocks((3, 11, 7)) and profiler_deadlocks((3, 10, 0))
    assert not profiler_deadlocks((3, 12, 0)) and not profiler_deadlocks((3, 13, 1))
