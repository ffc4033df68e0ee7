"""flows/ablations.py end to end, as a user runs it: a subprocess (Prefect's temporary server in the
first test, the session's shared server in the others)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, write_small_project_params
from tests.fake_ollama import FakeOllama
from tests.prefect_shared import flow_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_flow(args: list[str], params: Path, data: Path, tmp: Path, *,
             temporary_server: bool = False, **env_extra) -> tuple[int, dict, str]:
    """The flow as a subprocess; against the session's shared Prefect server unless
    ``temporary_server`` (then Prefect starts its own, as for a user without a server)."""
    env = flow_env(tmp, temporary_server=temporary_server, **env_extra)
    proc = subprocess.run([sys.executable, "flows/ablations.py", *args, "--params", str(params),
                           "--data", str(data), "--json"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    return proc.returncode, json.loads(lines[-1]) if lines else {}, proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flow")
    return tmp, write_small_project_params(tmp / "cfg"), tmp / "data"


def test_priority_1_end_to_end_then_resume_with_zero_calls(project):
    tmp, params, data = project
    rc, out, err = run_flow(["--priority", "1"], params, data, tmp, temporary_server=True)
    assert rc == 0, err[-3000:]
    assert out["ok"] and out["calls"] == 2 * 48 * (3 + 2 + 1) + 48  # + the FER classifier
    assert out["task_runs_recorded"] == out["task_runs"] > 0  # nothing lost at exit
    for aid in ("baseline", "A1", "A2"):
        m = json.loads((data / "results" / aid / "metrics.json").read_text())
        assert m["simulated"] is True and m["verdict"]
    assert (data / "results/A1/tables/main.csv").exists()
    assert (data / "results/A1/figures/scatter.png").exists()
    csvs = sorted((data / "results").glob("*/*/*.csv"))  # tables/ and plots/
    assert csvs and all("simulated" in c.read_text().splitlines()[0].split(",") for c in csvs)
    # each analysis timed for the next dry run's estimate; the run listed its models
    assert json.loads((data / "results/A1/analysis-key.json").read_text())["seconds"] >= 0
    assert "A1: simulated/gemma3-4b, simulated/llama3.2-vision-11b, fer/mini-xception" in err
    report = (data / "results/report.md").read_text()
    assert "SIMULATED DATA" in report and "## A1: text-only arousal" in report
    for noise in ("Traceback", "telemetry", "CancelledError"):
        assert noise not in err
    rc, again, err = run_flow(["--priority", "1"], params, data, tmp)
    assert rc == 0 and again["calls"] == 0, err[-2000:]


def test_a10_a11_after_a3_make_no_calls(project):
    tmp, params, data = project
    rc, out, err = run_flow(["--only", "A3"], params, data, tmp)
    assert rc == 0, err[-3000:]
    rc, out, err = run_flow(["--only", "A10,A11"], params, data, tmp)
    assert rc == 0 and out["calls"] == 0 and out["ablations"] == ["A10", "A11"], err[-3000:]
    for aid in ("A10", "A11"):
        m = json.loads((data / "results" / aid / "metrics.json").read_text())
        assert m["simulated"] is True and m["verdict"].startswith(aid) and m["figures"]
    report = (data / "results/report.md").read_text()
    assert "## A10: test-retest reliability" in report and "## A11: calibration" in report


def test_only_a7_runs_real_faces_and_fer(project):
    tmp, params, data = project
    rc, out, err = run_flow(["--only", "A7"], params, data, tmp)
    assert rc == 0, err[-3000:]
    table = (data / "results/A7/tables/main.csv").read_text()
    assert "fer/mini-xception" in table and "synthetic stand-in" in (
        data / "results/A7/metrics.json").read_text()


def test_failed_batch_exits_nonzero_and_says_where(tmp_path):
    params = write_small_project_params(tmp_path / "cfg")
    with FakeOllama(reject_chat=400) as server:
        rc, out, err = run_flow(["--only", "A5", "--models", "ollama/gemma3:4b"], params,
                                tmp_path / "data", tmp_path, OLLAMA_HOST=server.host)
    assert rc == 1 and not out["ok"]
    # batches run in a window and fail in the order they finish: which one is first varies
    assert re.search(r"batch b\d{4} of ollama/gemma3:4b / context_carry_t0_r1 \[embedded\] "
                     r"failed: ollama/gemma3:4b: request rejected", out["error"]), out["error"]
    assert "run the same command again" in out["error"]
