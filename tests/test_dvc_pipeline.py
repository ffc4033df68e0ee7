"""Real DVC on a temporary git+DVC repository built from this project.

repro -> push to a local directory remote -> fresh clone -> pull gives identical hashes, and a
second repro does nothing. DVC runs as a subprocess (two Repo objects on one repo deadlock).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".gitignore", ".dvcignore"]
PROJECT_DIRS = ["emoface", "schemas", "tasks", "flows"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    return env


def run(cmd: list[str], cwd: Path) -> str:
    if cmd[0] == "dvc":
        cmd = [sys.executable, "-m", "dvc", *cmd[1:]]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def tree_hashes(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    for f in PROJECT_FILES:
        shutil.copy(REPO / f, repo / f)
    for d in PROJECT_DIRS:
        if (REPO / d).is_dir():
            shutil.copytree(REPO / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
    # A small stimulus set keeps the round trip quick; the stage is the same.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["stimuli"]["identities_per_cell"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    return repo


def test_repro_push_clone_pull_round_trip(tmp_path, project_copy):
    repo = project_copy
    out = run(["dvc", "repro"], repo)
    assert "Running stage 'stimuli'" in out
    stim = repo / "data/stimuli/embedded"
    assert len(list((stim / "images").glob("*.png"))) == 48
    first = tree_hashes(stim)

    again = run(["dvc", "repro"], repo)
    assert "Running stage" not in again and "up to date" in again
    assert run(["dvc", "status"], repo).strip().endswith("up to date.")

    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "pipeline"], repo)
    run(["dvc", "push"], repo)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "data/stimuli/embedded").exists()
    run(["dvc", "pull"], clone)
    assert tree_hashes(clone / "data/stimuli/embedded") == first
    # the pulled data satisfies the lock: nothing to reproduce
    assert "Running stage" not in run(["dvc", "repro"], clone)


def test_param_change_reruns_stage(project_copy):
    repo = project_copy
    run(["dvc", "repro"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["stimuli"]["seed"] = 99
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage 'stimuli'" in run(["dvc", "repro"], repo)
