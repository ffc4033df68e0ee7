"""What a researcher sees in the Prefect UI during a run, read back from a real server's API:
one log line per finished batch with its request-level retries, a progress artifact per subflow
that ends at 100 %, tags (commit, selection, DVC experiment) and a run name that tells two runs
of the same selection apart, links to the report, and no ERROR log in a clean A9 run (the
hidden-states task is not cached on an unhashable backend)."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from tests.conftest import REPO, write_small_project_params
from tests.fake_ollama import FakeOllama

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(params, data, env, only: str, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "flows/ablations.py", "--only", only, "--params",
                           str(params), "--data", str(data), *extra], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_batch_log_lines_progress_tags_names_and_no_error(shared_prefect, tmp_path):
    url, env = shared_prefect.url, shared_prefect.env
    params = write_small_project_params(tmp_path / "cfg")
    params.write_text(params.read_text().replace("backoff_s: 1.0", "backoff_s: 0.05"))
    env = dict(env, PREFECT_API_URL=url,
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp_path / "results"))
    # the same selection twice (two data folders, so both have work), once under `dvc exp run`
    run(params, tmp_path / "data", dict(env, DVC_EXP_NAME="lucky-exp",
                                        DVC_EXP_BASELINE_REV="0123456789abcdef"), "A5,A9")
    run(params, tmp_path / "data2", env, "A5,A9")
    # Ollama's first 3 chats get a 500: 3 request-level retries, the batch itself succeeds
    with FakeOllama(fail_first=3) as server:
        run(params, tmp_path / "data3", dict(env, OLLAMA_HOST=server.host), "A5", "--models",
            "ollama/gemma3:4b")

    api = httpx.Client(base_url=url, timeout=30)
    flows = shared_prefect.flow_runs(api)  # the session's server: this test's runs
    ids = [f["id"] for f in flows]
    parents = [f for f in flows if f["name"].startswith("only A5,A9 | simulated/")]
    assert len(parents) == 2 and parents[0]["name"] != parents[1]["name"]
    assert sum(f["name"].endswith("| lucky-exp") for f in parents) == 1
    for f in flows:  # subflows inherit the tags of their invocation
        tags = set(f["tags"])
        assert tags & {"selection:only A5,A9", "selection:only A5"}, f["name"]
        assert any(re.fullmatch(r"commit:[0-9a-f]{12}(-dirty)?", t) for t in tags), tags
        assert len([t for t in tags if t.startswith("invocation-")]) == 1  # one id per run
    exp_runs = [f for f in flows if "dvc-exp:lucky-exp" in f["tags"]]
    assert exp_runs and all("dvc-baseline:0123456789ab" in f["tags"] for f in exp_runs)
    assert {"A5 dark knowledge", "A9 hidden states"} <= {f["name"] for f in exp_runs}

    logs = shared_prefect.of_runs(api, "logs", ids)
    assert not [g["message"] for g in logs if g["level"] >= 40]  # no ERROR (A9's HashError was)
    lines = [g["message"] for g in logs if " attempts (" in g["message"]]
    # one line per batch that made calls (48 stimuli / 24 per batch = 2 per condition and model)
    assert len(lines) >= 2 * 4 and all(re.search(r"\d+ rows, \d+ calls, \d+ attempts \(\d+ retr(y|ies)\), "
                                   r"latency [\d.]+ s/call, tokens [\d,]+ in / [\d,]+ out", m)
                         for m in lines)
    retries = sum(int(re.search(r"\((\d+) retr", m).group(1)) for m in lines)
    assert retries == 3  # the fake server's three 500s, all in the Ollama run

    arts = shared_prefect.of_runs(api, "artifacts", ids)
    progress = [a for a in arts if a["type"] == "progress"]
    keys = {a["key"] for a in progress}
    assert {"baseline-progress", "a5-dark-knowledge-progress",
            "a9-hidden-states-progress"} <= keys
    assert all(float(a["data"]) == 100.0 for a in progress)
    links = {a["key"]: a for a in arts if a["type"] == "markdown" and a["key"] == "report-md"}
    assert links and "report.md" in links["report-md"]["data"]
    report = next(a for a in arts if a["key"] == "report")
    assert "file://" in report["data"] and "](figures" not in report["data"]
