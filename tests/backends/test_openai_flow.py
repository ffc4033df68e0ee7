"""flows/ablations.py with an ``openai/...`` model against the local OpenAI-compatible stand-in:
``--priority 1`` end to end, resume after kill -9 (rows of an uninterrupted run), and a dead server
or a missing model reported before Prefect starts, as one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.conftest import REPO, write_small_project_params
from tests.fake_openai import FakeOpenAI
from tests.flows.test_flow_runs import run_flow
from tests.prefect_shared import flow_env

pytestmark = [pytest.mark.integration]

MODEL = "openai/Qwen/Qwen2.5-VL-7B-Instruct"
VOLATILE = ("latency_s", "attempts", "cached_tokens")  # the cache's state differs after a kill


def _rows(data) -> pl.DataFrame:
    files = sorted((data / "predictions").glob("*/*/openai_*/b*.parquet"))
    assert files
    df = pl.concat([pl.read_parquet(f) for f in files])
    return df.drop(*VOLATILE).sort("condition_id", "stimulus_id")


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One uninterrupted ``--priority 1`` run against a module-wide stand-in server."""
    tmp = tmp_path_factory.mktemp("openai-flow")
    params = write_small_project_params(tmp / "cfg")
    cfg = yaml.safe_load(params.read_text())
    cfg["inference"]["openai"] = {"retries": 8, "backoff_s": 0.05}  # 30 % faults: quick retries
    params.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with FakeOpenAI(latency_s=0.02) as server:
        rc, out, err = run_flow(["--priority", "1", "--models", MODEL], params, tmp / "clean",
                                tmp, OPENAI_BASE_URL=server.base_url)
        assert rc == 0, err[-3000:]
        yield server, params, tmp, out


def test_priority_1_end_to_end(clean):
    server, params, tmp, out = clean
    # all in the plan-wide inference subflow: baseline 48 x 3 turns + the FER classifier's 48,
    # A1 48 x 2, A2 48 x 1; the subflows after it find every batch stored
    assert out["ok"] and out["calls_by_flow"] == {"inference": 192 + 96 + 48, "baseline": 0,
                                                  "A1": 0, "A2": 0}
    assert MODEL in (tmp / "clean/results/report.md").read_text()
    rows = _rows(tmp / "clean")
    assert rows.height == 3 * 48 and set(rows["served_by"]) == {server.base_url}
    assert rows["model_digest"].str.starts_with("no-weight-digest:").all()


def test_resume_after_kill_9_gives_the_rows_of_an_uninterrupted_run(clean):
    server, params, tmp, _ = clean
    data = tmp / "killed"
    env = flow_env(tmp, PREFECT_HOME=str(tmp / "prefect-home-2"),
                   OPENAI_BASE_URL=server.base_url)  # the session's Prefect server
    proc = subprocess.Popen(
        [sys.executable, "flows/ablations.py", "--priority", "1", "--models", MODEL,
         "--params", str(params), "--data", str(data), "--json"], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while (not list((data / "predictions").glob("*/*/openai_*/b*.json"))
           and proc.poll() is None and time.time() < deadline):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((data / "predictions").glob("*/*/openai_*/b*.json"))
    before = len(server.chat_requests())
    rc, out, err = run_flow(["--priority", "1", "--models", MODEL], params, data, tmp,
                            OPENAI_BASE_URL=server.base_url)
    assert rc == 0, err[-3000:]
    # only what the kill left undone (and two one-token probes) was asked again
    assert 0 < len(server.chat_requests()) - before < 2 + 3 * 48 + 2 * 48 + 48
    assert _rows(data).equals(_rows(tmp / "clean"))


def test_thirty_percent_faults_give_the_rows_of_a_fault_free_run(clean):
    server, params, tmp, _ = clean
    server.fault_rate, server.faults = 0.3, ("500", "drop", "429")
    try:
        rc, out, err = run_flow(["--priority", "1", "--models", MODEL], params, tmp / "faults",
                                tmp, OPENAI_BASE_URL=server.base_url)
    finally:
        server.fault_rate = 0.0
    assert rc == 0, err[-3000:]
    assert set(server.fault_log) == {"500", "drop", "429"} and len(server.fault_log) > 50
    assert _rows(tmp / "faults").equals(_rows(tmp / "clean"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_server_and_missing_model_are_one_line_before_the_flow_starts(tmp_path):
    params = write_small_project_params(tmp_path / "cfg")
    url = f"http://127.0.0.1:{_free_port()}/v1"
    t0 = time.monotonic()
    rc, out, err = run_flow(["--only", "A5", "--models", MODEL], params, tmp_path / "data",
                            tmp_path, OPENAI_BASE_URL=url)
    line = _one_line(err)
    assert rc == 2 and f"server at {url} does not answer" in line and "vllm serve" in line
    with FakeOpenAI() as server:
        rc, out, err = run_flow(["--only", "A5", "--models", "openai/llava-hf/llava-1.5-7b-hf"],
                                params, tmp_path / "data", tmp_path,
                                OPENAI_BASE_URL=server.base_url)
        assert server.chat_requests() == []
    line = _one_line(err)
    assert rc == 2 and "does not serve 'llava-hf/llava-1.5-7b-hf'" in line
    assert server.base_url in line and "Qwen/Qwen2.5-VL-7B-Instruct" in line
    assert not (tmp_path / "data" / "predictions").exists()
    print(f"both reported in {time.monotonic() - t0:.1f} s (two processes)")


@pytest.mark.slow
def test_two_dask_workers_with_their_own_servers_give_the_rows_of_one_process(tmp_path):
    pytest.importorskip("prefect_dask")
    import shutil

    from emoface.config import load_params
    from emoface.inference.service import run_condition_for
    from emoface.inference.store import PredictionStore, model_slug
    from emoface.paths import DataPaths
    from tests.dask_local import dask_cluster, local_env

    params = write_small_project_params(tmp_path / "cfg")
    cfg = yaml.safe_load(params.read_text())
    cfg["inference"]["batch_size"] = 8
    cfg["inference"]["openai"] = {"concurrency": 4, "retries": 1, "backoff_s": 0.1}
    cfg["execution"] = {"dask": None, "worker_timeout_s": 60}
    params.write_text(yaml.safe_dump(cfg, sort_keys=False))
    data = tmp_path / "data"
    with FakeOpenAI(latency_s=0.02) as a, FakeOpenAI(latency_s=0.02) as b, \
            dask_cluster(tmp_path / "dask", [a.base_url, b.base_url],
                         host_var="OPENAI_BASE_URL") as (address, _):
        proc = subprocess.run(
            [sys.executable, "flows/ablations.py", "--only", "A5", "--models", MODEL, "--stage",
             "inference", "--params", str(params), "--data", str(data), "--json", "--dask",
             address], cwd=REPO, env=local_env(tmp_path, temporary_server=False),
            capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        served = (len(a.chat_requests()), len(b.chat_requests()))
    assert min(served) > 1, served  # both servers answered model calls (beyond their probe)
    emotions = load_params(params).study.emotions
    folder = Path("embedded/context_carry_t0_r1") / model_slug(MODEL)
    cluster = PredictionStore(data).read(data / "predictions" / folder, emotions, n_batches=6)
    assert {s.split(" ", 1)[1] for s in cluster["served_by"]} == {a.base_url, b.base_url}

    ref = load_params(params)
    with FakeOpenAI() as c:
        ref = ref.model_copy(update={"inference": ref.inference.model_copy(update={
            "openai": ref.inference.openai.model_copy(update={"base_url": c.base_url})})})
        ref_data = tmp_path / "single"
        shutil.copytree(data / "stimuli", ref_data / "stimuli")
        run_condition_for(ref, DataPaths(ref_data), MODEL, protocol="context_carry")
    local = PredictionStore(ref_data).read(ref_data / "predictions" / folder, emotions,
                                           n_batches=6)
    volatile = ["served_by", "latency_s", "cached_tokens", "attempts"]
    assert cluster.sort("stimulus_id").drop(volatile).equals(
        local.sort("stimulus_id").drop(volatile))
