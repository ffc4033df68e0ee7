"""DVC experiments and metrics read in a 120-column terminal: `make exps` (scripts/dvc_exps.py) puts
the experiments side by side, one row per changed parameter and per ablation's outcome, with no
line wider than $COLUMNS and nothing cut; `dvc metrics show` (one headline.json per ablation) fits
too. On a small git+DVC repository whose stage writes a headline.json per registered ablation
(the longest outcome names, as the analyses write them) and three experiments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emoface.ablations import registry
from schemas.analysis import OUTCOMES
from tests.conftest import REPO
from tests.test_dvc_pipeline import _env, copy_dvc_setup, run

pytestmark = pytest.mark.integration

STAGE = """\
import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))
ids, outcomes = json.load(open("ids.json")), json.load(open("outcomes.json"))
shift = int(p["analysis"]["alpha"] * 100) + len(p["ablations"]["A3"]["temperatures"])
for i, a in enumerate(ids):
    d = pathlib.Path(f"data/results/{a}")
    d.mkdir(parents=True, exist_ok=True)
    (d / "headline.json").write_text(json.dumps({
        "outcome": outcomes[(i + shift) % len(outcomes)], "estimate": -0.123456789 * (i + 1),
        "ci_low": -1.23456789, "ci_high": 0.987654321 * p["analysis"]["alpha"],
        "p_adj": 0.0123456789}))
"""


def _show(cmd: list[str], cwd: Path, tmp: Path) -> str:
    env = {**_env(tmp), "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, *cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _fits(text: str) -> None:
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert "…" not in text and "..." not in text, text


@pytest.fixture
def experiments(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo, tmp_path)
    run(["dvc", "init", "-q"], repo, tmp_path)
    copy_dvc_setup(repo)
    ids = ["baseline", *registry()]
    (repo / "ids.json").write_text(json.dumps(ids))
    longest = sorted(OUTCOMES, key=len, reverse=True)[:4]
    (repo / "outcomes.json").write_text(json.dumps(longest))
    (repo / "headlines.py").write_text(STAGE)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    metrics = [f"data/results/{a}/headline.json" for a in ids]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"analyses": {
        "cmd": "python headlines.py", "deps": ["headlines.py", "ids.json", "outcomes.json"],
        "params": ["analysis", "ablations"], "metrics": metrics}}}, sort_keys=False))
    (repo / ".gitignore").write_text("/data\n")
    run(["dvc", "repro", "-q"], repo, tmp_path)
    run(["git", "add", "-A"], repo, tmp_path)
    run(["git", "commit", "-q", "-m", "headlines"], repo, tmp_path)
    run(["dvc", "exp", "run", "-q", "-n", "alpha01", "-S", "analysis.alpha=0.01"], repo, tmp_path)
    run(["dvc", "exp", "run", "-q", "-n", "temps", "-S",
         "ablations.A3.temperatures=[0.0,0.3,0.6,0.9,1.2,1.5]"], repo, tmp_path)
    run(["dvc", "exp", "run", "-q", "-n", "both", "-S", "analysis.alpha=0.1", "-S",
         "ablations.A3.temperatures=[0.0,1.0]"], repo, tmp_path)
    return repo


def test_exps_and_metrics_fit_120_columns(experiments, tmp_path):
    repo = experiments
    # what DVC's own table does with 60 headline columns in 120: folds them into "…"
    plain = _show(["-m", "dvc", "exp", "show", "--no-pager"], repo, tmp_path)
    assert "…" in plain

    out = _show([str(REPO / "scripts" / "dvc_exps.py")], repo, tmp_path)
    _fits(out)
    lines = out.splitlines()
    names = lines[0].split()
    assert names[0] == "experiment" and {"workspace", "main", "alpha01", "temps", "both"} <= set(
        " ".join(lines).split())
    # the changed parameters and every ablation, one row each
    row_names = {line.split()[0] for line in lines if line and not line.startswith(("-", "*"))}
    assert {"analysis.alpha", "ablations.A3.temperatures"} <= row_names
    assert {"baseline", *registry()} <= row_names
    assert "study.emotions" not in row_names  # unchanged parameters are left out
    # the values themselves, whole (an A3 list wraps rather than being cut)
    assert "0.01" in out and "[0.0, 0.3, 0.6, 0.9," in out.replace("\n", " ")
    assert all(o in out for o in sorted(OUTCOMES, key=len, reverse=True)[:4])

    metrics = _show(["-m", "dvc", "metrics", "show"], repo, tmp_path)
    _fits(metrics)
    assert len([line for line in metrics.splitlines() if "/headline.json" in line]) == len(
        ["baseline", *registry()])

