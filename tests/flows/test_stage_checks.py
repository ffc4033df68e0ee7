"""What a run checks before Prefect starts, on a complete store (issue 23 item 8): ``--stage
analyses`` verifies every input batch's checksum as the readers do, and a re-run whose models
are all stored still preflights its servers. No Prefect server is started here: the store is
filled through the library (``emoface infer``'s service) and the analyses as the task runs them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from emoface.ablations import baseline_items, build_plan, run_analysis
from emoface.analysis.context import AnalysisContext
from emoface.analysis.headline import write_headline
from emoface.analysis.report import write_result
from emoface.config import load_params
from emoface.inference.service import run_condition_for
from emoface.paths import DataPaths
from emoface.stimuli.generate import generate_stimulus_set
from emoface.uptodate import analysis_key, record_analysis
from flows.ablations import main
from tests.conftest import write_small_project_params
from tests.fake_ollama import FakeOllama


def _project(tmp_path: Path, **inference) -> tuple[Path, DataPaths]:
    path = write_small_project_params(tmp_path / "cfg")
    raw = yaml.safe_load(path.read_text())
    raw["models"]["fer"] = []  # the FER classifier adds nothing to what is tested here
    raw["inference"]["ollama"].update(inference)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    data = DataPaths(tmp_path / "data")
    params = load_params(path)
    generate_stimulus_set(params.study, params.stimuli, data.stimulus_set(params.stimuli.set_name))
    return path, data


def _fill_store(params, data: DataPaths, ids: list[str], models: list[str]) -> None:
    for it in build_plan(params, ids, models).unique:
        c = it.condition
        run_condition_for(params, data, it.model_id, protocol=c.protocol,
                          temperature=c.temperature, repeat=c.repeat,
                          label_source=c.label_source, stimulus_set=it.stimulus_set)


def _analyse(params, data: DataPaths, ids: list[str], models: list[str]) -> None:
    """What tasks/analysis.py does per analysis: run, write, record its key."""
    plan = build_plan(params, ids, models)
    work = {"baseline": baseline_items(params, models), **plan.per_ablation}
    for aid, items in work.items():
        key = analysis_key(aid, params, data, models, items)
        result = run_analysis(aid, AnalysisContext(params, data, models))
        folder = write_result(result, data.root / "results")
        write_headline(aid, result.outcome, result.tables, folder)
        record_analysis(aid, key, data)


def _flip_a_bit(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0x01  # same size: only a checksum tells
    path.write_bytes(bytes(b))


def test_stage_analyses_verifies_checksums_before_calling_anything_up_to_date(tmp_path, capsys):
    path, data = _project(tmp_path)
    params = load_params(path)
    models = list(params.models.study)
    _fill_store(params, data, ["A2"], models)
    _analyse(params, data, ["A2"], models)
    argv = ["--only", "A2", "--stage", "analyses", "--params", str(path),
            "--data", str(data.root), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["up_to_date"] is True

    batch = sorted(data.root.glob("predictions/embedded/single_shot_t0_r1/simulated_gemma3*/"
                                  "b0001.parquet"))[0]
    _flip_a_bit(batch)
    assert main(argv) == 2  # was 0: "up to date"
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and str(batch) in err[0], err
    assert "b0001: damaged (checksum differs from the committed one)" in err[0]


def test_stage_analyses_without_inference_says_so_in_one_line(tmp_path, capsys):
    path, data = _project(tmp_path)
    assert main(["--only", "A2", "--stage", "analyses", "--params", str(path),
                 "--data", str(data.root)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "run the inference for it first" in err[0], err


def test_a_complete_store_with_the_server_down_is_the_preflight_line(tmp_path, capsys):
    with FakeOllama() as server:
        path, data = _project(tmp_path, host=server.host, retries=0, timeout_s=5.0)
        params = load_params(path)
        _fill_store(params, data, ["A2"], ["ollama/gemma3:4b"])
        argv = ["--only", "A2", "--models", "ollama/gemma3:4b", "--params", str(path),
                "--data", str(data.root), "--dry-run", "--json"]
        assert main(argv) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["calls_remaining"] == 0 and plan["calls_done"] > 0  # every batch stored
    # the server is gone: the re-run stops at the preflight, before Prefect would start
    assert main(argv[:-2]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "ollama/gemma3:4b" in lines[0], err
    assert server.host.removeprefix("http://") in lines[0]
    assert "Starting temporary server" not in err and "Traceback" not in err


def test_every_model_of_the_plan_is_preflighted(monkeypatch):
    import flows.ablations as fa

    seen = []
    monkeypatch.setattr("emoface.inference.preflight.preflight",
                        lambda ids, inference, emotions=(): seen.extend(ids) or list(ids))
    summary = {"conditions": [
        {"model_id": "ollama/a", "calls": 10, "calls_done": 10, "stimuli_known": True},
        {"model_id": "ollama/b", "calls": 10, "calls_done": 3, "stimuli_known": True}]}
    fa.check_backends(summary, load_params(Path(fa.ROOT) / "params.yaml"))
    assert seen == ["ollama/a", "ollama/b"]  # the complete one too: its digest is checked
