"""Real DVC on a temporary git+DVC repository built from this project (reduced params).

repro -> a second repro does nothing -> one temperature changed makes backend calls only for the
changed conditions -> push to a local directory remote -> a fresh clone pulls and re-runs the
analyses without a single backend call. DVC runs as a subprocess (two Repo objects on one repo
deadlock); `python` on PATH is this environment's interpreter. The stages' flows use the test
session's Prefect server (the temporary server of a run without one is tested in tests/flows/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emoface.ablations import registry
from tests.conftest import REPO, write_small_project_params
from tests.prefect_shared import shared_api_url

# four runs of the analyses stage and two of inference: about 3 minutes on a quiet 2-core machine,
# past pyproject's 600 s hang guard at load 12 (seen); a hang still ends
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

PROJECT_FILES = ["dvc.yaml", "pyproject.toml", ".gitignore", ".dvcignore", "prefect.toml"]
# .dvc/config (plots.html_template), .dvc/plots: the plot templates, .dvc/plots-html: the page
PROJECT_DVC = ["config", "plots", "plots-html"]
PROJECT_DIRS = ["emoface", "schemas", "tasks", "flows"]


def _env(tmp: Path, *, shared_server: bool = False) -> dict[str, str]:
    """This environment for DVC and its stages; with ``shared_server`` the stages' flows use the
    test session's Prefect server (else each `flows/ablations.py` starts a temporary one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    if shared_server:
        env["PREFECT_API_URL"] = shared_api_url()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1", PREFECT_HOME=str(tmp / "prefect-home"),
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp / "prefect-results"),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    return env


def run(cmd: list[str], cwd: Path, tmp: Path) -> str:
    if cmd[0] == "dvc":
        cmd = [sys.executable, "-m", "dvc", *cmd[1:]]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(tmp, shared_server=True), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _json_out(cmd: list[str], cwd: Path, tmp: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dvc", *cmd[1:]], cwd=cwd, env=_env(tmp),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def backend_calls(output: str) -> list[int]:
    return [int(n) for n in re.findall(r"(\d+) backend calls", output)]


def tree_hashes(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    for f in PROJECT_FILES:
        shutil.copy(REPO / f, repo / f)
    for d in PROJECT_DIRS:
        shutil.copytree(REPO / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(write_small_project_params(tmp_path / "cfg"), repo / "params.yaml")
    run(["git", "init", "-q", "-b", "main"], repo, tmp_path)
    run(["dvc", "init", "-q"], repo, tmp_path)
    copy_dvc_setup(repo)
    return repo


def copy_dvc_setup(repo: Path) -> None:
    """The project's .dvc files (PROJECT_DVC) into a repository after `dvc init`."""
    for d in PROJECT_DVC:
        src, dst = REPO / ".dvc" / d, repo / ".dvc" / d
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)


def test_pipeline_repro_change_push_clone_pull(tmp_path, project):
    repo = project
    out = run(["dvc", "repro"], repo, tmp_path)
    for stage in ("stimuli", "real_faces", "inference", "analyses"):
        assert f"Running stage '{stage}'" in out
    first_calls, analysis_calls = backend_calls(out)
    assert first_calls > 0 and analysis_calls == 0
    metrics = {p: json.loads(p.read_text()) for p in (repo / "data/results").glob("*/metrics.json")}
    assert len(metrics) == 1 + len(registry()) and all(m["simulated"] for m in metrics.values())
    assert "SIMULATED DATA" in (repo / "data/results/report.md").read_text()

    again = run(["dvc", "repro"], repo, tmp_path)
    assert "Running stage" not in again and "up to date" in again

    # change one A3 temperature: only its conditions make backend calls
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ablations"]["A3"]["temperatures"] = [0.0, 0.9]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = run(["dvc", "repro"], repo, tmp_path)
    assert "Running stage 'stimuli'" not in changed
    assert backend_calls(changed) == [2 * 2 * 48 * 3, 0]  # 2 models x 2 repeats x 48 x 3 turns

    shown = _json_out(["dvc", "metrics", "show", "--json"], repo, tmp_path)
    headlines = next(iter(shown.values()))["data"]
    assert len(headlines) == 1 + len(registry())  # one headline.json per ablation, no metrics.json
    for path, entry in headlines.items():
        assert path.endswith("/headline.json")
        assert "outcome" in entry["data"]  # DVC leaves out the null ones
        assert set(entry["data"]) <= {"outcome", "estimate", "ci_low", "ci_high", "p_adj"}
    table = run(["dvc", "metrics", "show"], repo, tmp_path)
    assert max(len(line) for line in table.splitlines()) <= 120, table
    plots = _json_out(["dvc", "plots", "show", "--json"], repo, tmp_path)
    assert "within_category_sd_by_temperature.csv" in json.dumps(plots)
    assert "errors" not in json.dumps(plots)  # every plot has x, y and a template that renders
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], repo, tmp_path)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert html.count("vegaEmbed(") == 1 + len(registry())
    assert "<script src=" not in html  # vega inlined from .dvc/plots-html (plots.html_template)

    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], repo, tmp_path)
    run(["git", "add", "-A"], repo, tmp_path)
    run(["git", "commit", "-q", "-m", "pipeline"], repo, tmp_path)
    run(["dvc", "push"], repo, tmp_path)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, tmp_path)
    assert not (clone / "data/predictions").exists()
    run(["dvc", "pull"], clone, tmp_path)
    assert tree_hashes(clone / "data/predictions") == tree_hashes(repo / "data/predictions")
    assert "Running stage" not in run(["dvc", "repro"], clone, tmp_path)
    # the analyses re-run from pulled data without a single backend call ...
    redo = run(["dvc", "repro", "-f", "-s", "analyses"], clone, tmp_path)
    assert backend_calls(redo) == [0]
    for name in ("A1", "A8", "A9"):
        a = json.loads((repo / f"data/results/{name}/metrics.json").read_text())
        b = json.loads((clone / f"data/results/{name}/metrics.json").read_text())
        assert a == b  # ... and reproduce the same numbers
    # ... and an experiment on an analysis parameter too
    exp = run(["dvc", "exp", "run", "-S", "analysis.alpha=0.1"], clone, tmp_path)
    assert "Running stage 'inference'" not in exp and backend_calls(exp) == [0]
    # `make exps` shows it beside main in 120 columns, every ablation's outcome, nothing cut
    shown = subprocess.run([sys.executable, str(REPO / "scripts" / "dvc_exps.py")], cwd=clone,
                           env={**_env(tmp_path), "COLUMNS": "120"}, capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert max(len(line) for line in shown.stdout.splitlines()) <= 120, shown.stdout
    assert "…" not in shown.stdout and "analysis.alpha" in shown.stdout
    assert all(f"\n{a}" in shown.stdout for a in ("baseline", *registry())), shown.stdout
