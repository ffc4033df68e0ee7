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
