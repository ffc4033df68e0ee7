"""The registry, selection, dedupe and the dry-run plan (no Prefect involved)."""

from __future__ import annotations

import json

import pytest

from emoface.ablations import BASELINE, EXECUTION_ORDER, REGISTRY, TIERS, build_plan, select
from emoface.config import Params
from emoface.inference.conditions import Condition
from flows.ablations import main


def test_registry_holds_the_plan():
    assert {f"A{i}" for i in range(1, 10)} <= set(REGISTRY)
    assert {a.id for a in REGISTRY.values() if a.priority == 1} == {"A1", "A2"}
    assert {a.id for a in REGISTRY.values() if a.priority == 2} == {"A3", "A4", "A5", "A6"}
    assert EXECUTION_ORDER[:9] == ("A5", "A8", "A1", "A2", "A3", "A6", "A4", "A7", "A9")
    assert TIERS["minimal"] == ("A1", "A2", "A5", "A8")
    assert TIERS["complete"] == tuple(f"A{i}" for i in range(1, 10))
    assert REGISTRY["A5"].paper_section == "Section 5.1" and REGISTRY["A8"].tiers[:2] == (
        "minimal", "complete")
    for a in REGISTRY.values():
        assert a.hypothesis and a.interpretation and a.analysis


def test_selection():
    assert select(priority=1) == ["A1", "A2"]
    assert select(priority=2) == ["A5", "A1", "A2", "A3", "A6", "A4"]
    assert select(tier="minimal") == ["A5", "A8", "A1", "A2"]
    assert select(only=["A8", "A5"]) == ["A5", "A8"]
    with pytest.raises(ValueError, match=r"unknown ablation\(s\): A99 \(known: A1, A2, "):
        select(only=["A99"])


def test_identical_conditions_are_one_piece_of_work():
    p = Params()
    plan = build_plan(p, select(tier="competitive"), list(p.models.study))
    keys = [i.key for i in plan.unique]
    assert len(keys) == len(set(keys))
    base = [i for i in plan.unique if i.condition == BASELINE]
    # A3's T=0 repeats 1-3 and A4's 4-bit arm (a study model) are the baseline itself
    assert Condition(temperature=0.0, repeat=3).condition_id == BASELINE.condition_id
    expected = {*p.models.study, *p.models.fer, p.ablations.A4.fp16, *p.ablations.A6.models}
    assert sorted(i.model_id for i in base) == sorted(expected)  # each exactly once
    a3 = [i for i in plan.per_ablation["A3"]
          if i.condition.temperature == 0 and i.model_id in p.models.study]
    assert len(a3) == 2 * 3 + 2  # as requested ...
    assert len({i.key for i in a3}) == 2  # ... but only the two baselines


@pytest.mark.parametrize("tier", ["minimal", "competitive", "complete", "extended"])
def test_dry_run_json_every_tier(tier, capsys, tmp_path):
    assert main(["--tier", tier, "--dry-run", "--json", "--data", str(tmp_path)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["ablations"] == [a for a in EXECUTION_ORDER if a in TIERS[tier]]
    for key in ("conditions", "calls_total", "calls_unique", "calls_done", "estimated_seconds"):
        assert key in plan
    assert plan["calls_unique"] < plan["calls_total"] and plan["calls_done"] == 0
    assert all({"model_id", "condition_id", "calls", "calls_done"} <= set(c)
               for c in plan["conditions"])


def test_dry_run_priority_1_counts(capsys, tmp_path):
    assert main(["--priority", "1", "--dry-run", "--json", "--data", str(tmp_path)]) == 0
    plan = json.loads(capsys.readouterr().out)
    # baseline 2 x 1440 x 3 (+ the FER classifier, 1 call per image), text-only 2 x 1440 x 2,
    # single-shot 2 x 1440 x 1
    assert plan["calls_unique"] == 2 * 1440 * (3 + 2 + 1) + 1440
    # naive: A1 and A2 each counted with their own baseline
    assert plan["calls_total"] == plan["calls_unique"] + 2 * 1440 * 3 + 1440


def test_dry_run_table_and_bad_selection(capsys, tmp_path):
    assert main(["--only", "A5,A8", "--dry-run", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "A5" in out and "unique" in out and "estimated time" in out
    assert main(["--only", "A99", "--dry-run"]) == 2
    assert "unknown ablation(s): A99 (known: A1," in capsys.readouterr().err


# --- "real" and "simulated" never mix silently (issue 18 item 4) -------------------------------

@pytest.mark.parametrize("models,words", [
    ("gpt4o", "model id 'gpt4o' must be backend/model with backend one of: simulated, ollama, "
              "mlx, fer"),
    ("foo/bar", "model id 'foo/bar' must be backend/model with backend one of: simulated, "),
    ("ollama/", "model id 'ollama/' must be backend/model"),
    (",", "an empty model id"),
    ("ollama/gemma3:4b,", "an empty model id"),
    ("ollama/a,ollama/a", "model 'ollama/a' is listed twice"),
])
@pytest.mark.parametrize("dry", [True, False])
def test_model_ids_are_checked_alike_by_the_dry_run_and_the_run(capsys, tmp_path, models, words,
                                                                dry):
    argv = ["--priority", "1", "--models", models, "--data", str(tmp_path / "d")]
    assert main(argv + (["--dry-run"] if dry else [])) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith("error: --models") and words in err[0], err
    assert not (tmp_path / "d").exists()  # refused before anything was written


def _dry_json(capsys, *args: str) -> dict:
    assert main(["--dry-run", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_dry_run_lists_models_per_ablation_and_warns_where_one_stays_simulated(capsys, tmp_path):
    plan = _dry_json(capsys, "--tier", "complete", "--models", "ollama/gemma3:4b",
                     "--data", str(tmp_path))
    per = plan["models_by_ablation"]
    assert per["A1"] == ["ollama/gemma3:4b", "fer/mini-xception"]
    assert per["A4"] == ["simulated/gemma3-4b", "simulated/gemma3-4b-fp16"]  # its two arms
    assert per["A9"] == ["simulated/gemma3-4b"]
    warned = {w.split()[1]: w for w in plan["warnings"]}
    assert sorted(warned) == ["A4", "A6", "A9"]  # one line per ablation still simulated
    assert all("\n" not in w for w in plan["warnings"])
    assert "simulated/gemma3-4b (ablations.A4.q4)" in warned["A4"]
    assert "simulated/gemma3-4b-fp16 (ablations.A4.fp16)" in warned["A4"]
    assert "simulated/kimi-vl (ablations.A6.models)" in warned["A6"]
    assert "simulated/gemma3-4b (ablations.A9.model)" in warned["A9"]
    assert "real models (ollama/gemma3:4b)" in warned["A9"]
    # the table form prints the same lines, each on one line
    assert main(["--dry-run", "--tier", "complete", "--models", "ollama/gemma3:4b",
                 "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert warned["A6"] in out.splitlines()
    # all simulated (the default) or all real: nothing to warn about
    assert _dry_json(capsys, "--tier", "complete", "--data", str(tmp_path))["warnings"] == []


def _readme_real_block() -> dict:
    import re

    import yaml

    from tests.conftest import REPO

    text = (REPO / "README.md").read_text()
    section = text.split("## Switching to real models", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return yaml.safe_load(block)


def test_the_readme_settings_make_every_ablation_real(tmp_path):
    import yaml

    from emoface.config import parse_params
    from emoface.planning import models_by_ablation, simulated_warnings
    from tests.conftest import REPO

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    real = _readme_real_block()
    base["models"].update(real["models"])
    for aid, section in real["ablations"].items():
        base["ablations"].setdefault(aid, {}).update(section)
    params = parse_params(base)
    plan = build_plan(params, select(tier="extended"), list(params.models.study))
    used = {m for ms in models_by_ablation(plan).values() for m in ms}
    assert not [m for m in used if m.startswith("simulated/")]
    assert simulated_warnings(plan, params) == []
    # the README's block names every setting that holds a VLM: the study models, A4, A6, A9
    assert set(real["ablations"]) == {"A4", "A6", "A9"} and "study" in real["models"]


def test_the_estimate_includes_the_analyses(capsys, tmp_path):
    from emoface.ablations import get
    from emoface.planning import DEFAULT_REPORT_S

    plan = _dry_json(capsys, "--priority", "1", "--data", str(tmp_path))
    # nothing stored: the baseline, A1 and A2 run at their stated defaults, + the report
    assert set(plan["analyses_to_run"]) == {"baseline", "A1", "A2"}
    base, a1, a2 = (get("baseline").analysis_seconds, REGISTRY["A1"].analysis_seconds,
                    REGISTRY["A2"].analysis_seconds)
    assert plan["analyses_to_run"]["A1"] == {"seconds": a1, "source": "default"}
    assert plan["estimated_analysis_seconds"] == pytest.approx(base + a1 + a2 + DEFAULT_REPORT_S)
    assert plan["estimated_seconds"] == pytest.approx(
        plan["estimated_inference_seconds"] + plan["estimated_analysis_seconds"], abs=0.11)
    # an earlier run here timed A1 at 123.4 s: that replaces its default
    (tmp_path / "results" / "A1").mkdir(parents=True)
    (tmp_path / "results" / "A1" / "analysis-key.json").write_text(
        json.dumps({"key": "old", "metrics_sha256": "x", "seconds": 123.4}))
    plan = _dry_json(capsys, "--priority", "1", "--data", str(tmp_path))
    assert plan["analyses_to_run"]["A1"] == {"seconds": 123.4, "source": "measured"}
    total = base + 123.4 + a2 + DEFAULT_REPORT_S
    assert plan["estimated_analysis_seconds"] == pytest.approx(total)
    # --stage inference runs no analysis
    plan = _dry_json(capsys, "--priority", "1", "--stage", "inference", "--data", str(tmp_path))
    assert plan["estimated_analysis_seconds"] == 0 and plan["analyses_to_run"] == {}
    # the table says so too
    assert main(["--dry-run", "--priority", "1", "--data", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"+ analyses {total / 60:.1f} min (3 to run, 1 timed in earlier runs here" in out


def test_the_start_of_a_run_lists_models_and_warns(capsys, tmp_path, monkeypatch):
    # a real model (a stand-in Ollama server) beside A4's simulated ones: once the checks pass
    # and the flow is about to start, the run prints each ablation's models and the warning
    import flows.pipeline
    from tests.fake_ollama import FakeOllama

    class Stopped:
        def is_completed(self):
            return False

        def result(self, raise_on_failure=True):
            return "stopped by the test before Prefect"

    started = []
    monkeypatch.setattr(flows.pipeline, "ablations_flow",
                        lambda *a, **k: started.append(a[0].models) or Stopped())
    monkeypatch.setattr("flows.ablations.wait_for_records", lambda ids: 0)
    with FakeOllama() as server:
        monkeypatch.setenv("OLLAMA_HOST", server.host)
        assert main(["--only", "A1,A4", "--models", "ollama/gemma3:4b",
                     "--data", str(tmp_path)]) == 1
    assert started == [["ollama/gemma3:4b"]]
    err = capsys.readouterr().err.splitlines()
    assert "A1: ollama/gemma3:4b, fer/mini-xception" in err
    assert "A4: simulated/gemma3-4b, simulated/gemma3-4b-fp16" in err
    assert sum(x.startswith("warning: A4 still uses simulated models") for x in err) == 1
    assert not any(x.startswith("warning: A1") for x in err)


def test_every_results_table_has_a_simulated_column():
    import polars as pl

    from emoface.analysis.report import with_simulated

    by_model = pl.DataFrame({"model_id": ["simulated/gemma3-4b", "ollama/gemma3:4b", "human"],
                             "r": [0.1, 0.2, 0.3]})
    assert with_simulated(by_model, True)["simulated"].to_list() == [True, False, True]
    assert with_simulated(by_model, False)["simulated"].to_list() == [True, False, False]
    plain = pl.DataFrame({"layer": [1, 2]})
    assert with_simulated(plain, True)["simulated"].to_list() == [True, True]
    kept = pl.DataFrame({"model_id": ["ollama/x"], "simulated": [True]})
    assert with_simulated(kept, False)["simulated"].to_list() == [True]
