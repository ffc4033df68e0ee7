"""Interrupted runs: killed at several points (kill -9 included), resumed, equal to a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from emoface.config import load_params
from emoface.errors import DataError
from emoface.inference.service import run_condition_for
from emoface.inference.store import PredictionStore
from emoface.paths import DataPaths
from emoface.stimuli.generate import generate_stimulus_set
from tests.conftest import REPO

DETERMINISTIC = ["stimulus_id", "emotion", "emotion_status", "valence", "valence_status",
                 "arousal", "arousal_status", "raw_answers", "model_digest", "options"]


def make_project(root: Path) -> tuple[Path, Path]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["stimuli"]["identities_per_cell"] = 2
    params["inference"]["batch_size"] = 6
    params["inference"]["simulated"] = {"latency_s": 0.01, "capacity": 2}
    root.mkdir(parents=True, exist_ok=True)
    pfile = root / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    p = load_params(pfile)
    data = root / "data"
    generate_stimulus_set(p.study, p.stimuli, DataPaths(data).stimulus_set("embedded"))
    return pfile, data


def infer_cmd(pfile: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "emoface", "infer", "--params", str(pfile), "--data", str(data)]


def rows(data: Path, pfile: Path) -> pl.DataFrame:
    folder = next((data / "predictions/embedded/context_carry_t0_r1").iterdir())
    p = load_params(pfile)
    return PredictionStore(data).read(folder, p.study.emotions, n_batches=8).sort("stimulus_id")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The rows of one clean run (made once: the tests only compare with them)."""
    pfile, data = make_project(tmp_path_factory.mktemp("ref"))
    summary = run_condition_for(load_params(pfile), DataPaths(data), "simulated/gemma3-4b",
                                protocol="context_carry")
    assert summary["calls"] == 48 * 3 and summary["rows"] == 48
    again = run_condition_for(load_params(pfile), DataPaths(data), "simulated/gemma3-4b",
                              protocol="context_carry")
    assert again["calls"] == 0 and again["batches_run"] == 0  # nothing changed: zero calls
    return rows(data, pfile)


def _batches(data: Path) -> int:
    base = data / "predictions/embedded/context_carry_t0_r1"
    # committed batches: the commit record is written last
    return len(list(base.rglob("b[0-9]*.json"))) if base.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_batches", [0, 1, 4, 7])
def test_kill_9_then_resume_equals_clean_run(tmp_path, reference, kill_after_batches):
    pfile, data = make_project(tmp_path / "run")
    proc = subprocess.Popen(infer_cmd(pfile, data), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while _batches(data) < kill_after_batches and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _batches(data)
    assert done_before < 8, "the run finished before it could be killed; raise the latency"

    out = subprocess.run(infer_cmd(pfile, data), capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["batches_run"] == 8 - done_before  # exactly the missing batches
    resumed = rows(data, pfile)
    assert resumed.height == 48 and resumed["stimulus_id"].n_unique() == 48
    assert resumed.select(DETERMINISTIC).equals(reference.select(DETERMINISTIC))
    assert not list(data.rglob("*.tmp")), "no half-written files may remain"


def test_truncated_batch_is_redone_and_gaps_are_refused(tmp_path, reference):
    pfile, data = make_project(tmp_path / "run")
    p = load_params(pfile)
    run_condition_for(p, DataPaths(data), "simulated/gemma3-4b", protocol="context_carry")
    folder = next((data / "predictions/embedded/context_carry_t0_r1").iterdir())
    victim = folder / "b0003.parquet"
    victim.write_bytes(victim.read_bytes()[:100])  # e.g. a bad copy by hand
    (folder / "b0005.parquet").unlink()
    with pytest.raises(DataError, match=r"2 of 8 prediction batch\(es\) not usable, first b0003"):
        PredictionStore(data).read(folder, p.study.emotions, n_batches=8)
    summary = run_condition_for(p, DataPaths(data), "simulated/gemma3-4b", protocol="context_carry")
    assert summary["batches_run"] == 2 and summary["calls"] == 2 * 6 * 3
    assert rows(data, pfile).select(DETERMINISTIC).equals(reference.select(DETERMINISTIC))


def test_changed_temperature_only_reruns_that_condition(tmp_path):
    pfile, data = make_project(tmp_path / "run")
    p = load_params(pfile)
    run_condition_for(p, DataPaths(data), "simulated/gemma3-4b", protocol="context_carry")
    hot = run_condition_for(p, DataPaths(data), "simulated/gemma3-4b", protocol="context_carry",
                            temperature=0.7)
    assert hot["calls"] == 144
    cold = run_condition_for(p, DataPaths(data), "simulated/gemma3-4b", protocol="context_carry",
                             repeat=2)  # T=0 repeat 2 is the same work as repeat 1
    assert cold["calls"] == 0
