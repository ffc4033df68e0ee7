"""flows/ablations.py over weeks of use, in a clone of the repository: a no-change re-run does
nothing, a damaged logits file is redone (exactly its batch), an edit to the analysis code re-runs
the analyses (and no inference)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, write_small_project_params
from tests.prefect_shared import flow_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _flow(repo: Path, args: list[str], params: Path, data: Path, tmp: Path) -> dict:
    env = flow_env(tmp)
    proc = subprocess.run([sys.executable, "flows/ablations.py", *args, "--params", str(params),
                           "--data", str(data), "--json"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1])


def test_no_change_damage_and_code_edit(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    params, data = write_small_project_params(tmp_path / "cfg"), tmp_path / "data"
    first = _flow(repo, ["--only", "A8"], params, data, tmp_path)
    assert first["ok"] and first["calls"] > 0 and not first.get("up_to_date")
    metrics = (data / "results/A8/metrics.json").read_bytes()
    key = (data / "results/A8/analysis-key.json").read_text()

    again = _flow(repo, ["--only", "A8"], params, data, tmp_path)
    assert again["up_to_date"] and again["calls"] == 0 and again["task_runs"] == 0

    gemma = next(p for p in (data / "predictions/embedded/context_carry_t0_r1").iterdir()
                 if p.name.startswith("simulated_gemma3"))
    (gemma / "b0001.npz").write_bytes((gemma / "b0001.npz").read_bytes()[:64])
    repaired = _flow(repo, ["--only", "A8"], params, data, tmp_path)
    assert not repaired.get("up_to_date") and repaired["calls"] == 24 * 3  # exactly that batch
    assert (data / "results/A8/metrics.json").read_bytes() == metrics  # same result as before
    key = (data / "results/A8/analysis-key.json").read_text()  # (a redone batch's latencies differ)

    analysis_module = repo / "emoface/analysis/metrics.py"
    analysis_module.write_text(analysis_module.read_text() + "\n# an edit to the analysis code\n")
    edited = _flow(repo, ["--only", "A8"], params, data, tmp_path)
    assert not edited.get("up_to_date") and edited["calls"] == 0 and edited["task_runs"] > 0
    assert (data / "results/A8/analysis-key.json").read_text() != key  # the analysis ran again
    assert (data / "results/A8/metrics.json").read_bytes() == metrics
    assert _flow(repo, ["--only", "A8"], params, data, tmp_path)["up_to_date"]
