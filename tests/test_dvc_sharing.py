"""Sharing with DVC as the README says: `make remote URL=...` (scripts/dvc_remote.py), one clear
line when no remote is set, and a user's own stimulus set tracked with `dvc add`, selected with
`stimuli.set_name`, pushed to a local-folder remote and pulled in a fresh clone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.conftest import REPO, write_small_project_params
from tests.test_dvc_pipeline import (
    PROJECT_DIRS,
    PROJECT_FILES,
    _env,
    copy_dvc_setup,
    tree_hashes,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def sh(cmd: list[str], cwd: Path, tmp: Path, ok: bool = True) -> subprocess.CompletedProcess:
    if cmd[0] == "dvc":
        cmd = [sys.executable, "-m", "dvc", *cmd[1:]]
    elif cmd[0].endswith(".py"):
        cmd = [sys.executable, *cmd]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(tmp), capture_output=True, text=True,
                          timeout=600)
    if ok:
        assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture
def project(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    for f in [*PROJECT_FILES, "Makefile"]:
        shutil.copy(REPO / f, repo / f)
    for d in [*PROJECT_DIRS, "scripts"]:
        shutil.copytree(REPO / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(write_small_project_params(tmp_path / "cfg"), repo / "params.yaml")
    sh(["git", "init", "-q", "-b", "main"], repo, tmp_path)
    sh(["dvc", "init", "-q"], repo, tmp_path)
    copy_dvc_setup(repo)
    return repo


def test_pull_and_push_without_a_remote_say_what_to_do(project, tmp_path):
    for verb in ("pull", "push"):
        out = sh(["scripts/dvc_remote.py", verb], project, tmp_path, ok=False)
        assert out.returncode == 2
        assert out.stderr.strip().count("\n") == 0  # one line
        assert "no DVC remote is set" in out.stderr and "make remote URL=" in out.stderr


def test_own_stimulus_set_tracked_selected_pushed_and_pulled(project, tmp_path, small_set):
    repo = project
    # the user's folder: 12 faces and a metadata CSV (README: your own faces)
    src = pl.read_csv(small_set.manifest).head(12)
    images = tmp_path / "faces"
    images.mkdir()
    for r in src.iter_rows(named=True):
        shutil.copyfile(small_set.root / r["file"], images / Path(r["file"]).name)
    meta = tmp_path / "faces.csv"
    src.select(pl.col("file").map_elements(lambda f: Path(f).name, return_dtype=pl.String),
               "emotion", "race", "gender", "identity").write_csv(meta)
    sh(["python", "-m", "emoface", "stimuli", "import", "mine", "--images", str(images), "--csv",
        str(meta), "--params", "params.yaml", "--data", "data"], repo, tmp_path)

    sh(["dvc", "add", "data/stimuli/mine"], repo, tmp_path)  # track it
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["stimuli"]["set_name"] = "mine"  # select it
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    deps = sh(["python", "-c", "from dvc.repo import Repo; r = Repo('.'); print([str(d) for s in "
               "('inference', 'analyses') for d in r.stage.collect(s)[0].deps])"],
              repo, tmp_path).stdout
    assert "data/stimuli/mine" in deps and "data/stimuli/embedded" not in deps

    remote = tmp_path / "remote"
    sh(["scripts/dvc_remote.py", "set", str(remote)], repo, tmp_path)
    assert "url = " in (repo / ".dvc" / "config").read_text()
    sh(["git", "add", "-A"], repo, tmp_path)
    sh(["git", "commit", "-q", "-m", "my faces"], repo, tmp_path)
    sh(["scripts/dvc_remote.py", "push", "data/stimuli/mine.dvc"], repo, tmp_path)

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path, tmp_path)
    assert not (clone / "data/stimuli/mine").exists()
    sh(["scripts/dvc_remote.py", "pull", "data/stimuli/mine.dvc"], clone, tmp_path)
    assert tree_hashes(clone / "data/stimuli/mine") == tree_hashes(repo / "data/stimuli/mine")
    # the pipeline plans on the pulled set: 12 stimuli, nothing generated in its place
    plan = sh(["flows/ablations.py", "--only", "A1", "--dry-run", "--json"], clone, tmp_path)
    conditions = json.loads(plan.stdout)["conditions"]
    assert conditions and all(c["stimulus_set"] == "mine" and c["stimuli_known"]
                              and c["calls"] == 12 * c["calls_per_stimulus"] for c in conditions)
    assert not (clone / "data/stimuli/embedded").exists()
