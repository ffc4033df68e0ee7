"""A3's T = 0 repeats: one piece of work by default, distinct (own seeds) on request."""

from __future__ import annotations

from emoface.ablations import work_for
from emoface.ablations.a3_temperature import A3Params
from emoface.config import AblationsParams, Params
from emoface.inference.conditions import Condition


def test_t0_repeats_collapse_by_default_and_keep_their_batch_identity():
    c = Condition(temperature=0.0, repeat=2)
    assert c.condition_id == "context_carry_t0_r1"
    # the new flag is not part of the stored identity: existing batch keys are unchanged
    assert "distinct_t0" not in c.work().model_dump()


def test_distinct_t0_repeats_are_separate_work_with_their_own_seeds():
    p = Params()
    r1 = Condition(temperature=0.0, repeat=1, distinct_t0=True)
    r2 = Condition(temperature=0.0, repeat=2, distinct_t0=True)
    assert r1.condition_id == "context_carry_t0_r1"  # repeat 1 is the baseline's work
    assert r2.condition_id == "context_carry_t0_r2"
    assert r2.options(p.inference).seed == p.inference.seed + 1


def test_a3_plan_lists_distinct_t0_repeats_only_when_asked():
    grid = A3Params(temperatures=(0.0, 0.7), repeats=3)
    for mode, n_t0 in (("deterministic", 1), ("distinct", 3)):
        p = Params(ablations=AblationsParams(A3=grid.model_copy(update={"t0_repeats": mode})))
        ids = {i.condition.condition_id for i in work_for("A3", p, ["simulated/gemma3-4b"])
               if i.condition is not None}
        assert len({c for c in ids if "_t0_" in c}) == n_t0, mode
        assert len({c for c in ids if "_t0.7_" in c}) == 3
