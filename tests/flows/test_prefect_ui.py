"""A real `prefect server start` (the session's): a small plan runs against it, and the flow runs,
task runs (one retried) and artifacts it made are read back through its API."""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx
import pytest

from tests.conftest import REPO, write_small_project_params
from tests.fake_ollama import FakeOllama

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_runs_task_retries_and_artifacts_visible_in_the_api(shared_prefect, tmp_path):
    url, env = shared_prefect.url, shared_prefect.env
    params = write_small_project_params(tmp_path / "cfg")
    text = params.read_text().replace("retries: 4", "retries: 0")  # let the task retry instead
    params.write_text(text)
    lock, failed = threading.Lock(), {"n": 0}

    def one_conversation_fails_twice(body: dict) -> bool:
        # its first call fails in both of the batch's rounds, so the batch fails and Prefect
        # retries it (asking only that conversation again)
        image = (body["messages"][0].get("images") or [None])[0]
        with lock:
            first = failed.setdefault("image", image)
            if image == first and failed["n"] < 2:
                failed["n"] += 1
                return True
        return False

    with FakeOllama(fail_when=one_conversation_fails_twice) as server:
        run_env = dict(env, PREFECT_API_URL=url, OLLAMA_HOST=server.host,
                       PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp_path / "results"))
        proc = subprocess.run([sys.executable, "flows/ablations.py", "--only", "A5", "--models",
                               "ollama/gemma3:4b", "--params", str(params), "--data",
                               str(tmp_path / "data")], cwd=REPO, env=run_env,
                              capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    api = httpx.Client(base_url=url, timeout=30)
    flows = shared_prefect.flow_runs(api)
    ids = [f["id"] for f in flows]
    names = {f["name"] for f in flows}
    assert any(n.startswith("only A5") for n in names)
    assert {"baseline | ollama/gemma3:4b", "A5 dark knowledge"} <= names
    assert all(f["state_type"] == "COMPLETED" for f in flows)

    tasks = shared_prefect.of_runs(api, "task_runs", ids)
    batch = [t for t in tasks if t["name"].startswith("ollama/gemma3:4b | context_carry")]
    assert batch and all(t["state_type"] == "COMPLETED" for t in tasks)
    retried = [t for t in batch if t["run_count"] > 1]
    assert len(retried) == 1  # the batch whose conversation got two 500s was retried by Prefect
    history = api.get("/task_run_states/", params={"task_run_id": retried[0]["id"]}).json()
    assert "AwaitingRetry" in {s["name"] for s in history}

    keys = {a["key"] for a in shared_prefect.of_runs(api, "artifacts", ids)}
    assert {"a5-main-table", "a5-verdict", "baseline-main-table", "report"} <= keys
