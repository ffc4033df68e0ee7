"""Image-major scheduling on the tiny Gemma3: A3's conditions share the first turn, the image is
encoded once per image, and every stored batch equals the condition-at-a-time one."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytest.importorskip("mlx_vlm", reason="the mlx extra is not installed")
pytestmark = pytest.mark.mlx

from emoface.backends.mlx import MlxBackend  # noqa: E402
from emoface.config import InferenceParams  # noqa: E402
from emoface.inference.conditions import Condition  # noqa: E402
from emoface.inference.engine import plan_condition  # noqa: E402
from emoface.inference.scheduler import run_image_major, run_specs  # noqa: E402
from emoface.inference.shared import group_image_major  # noqa: E402
from emoface.inference.store import PredictionStore  # noqa: E402
from emoface.stimuli.store import load_stimulus_set  # noqa: E402
from tests.mlx_tiny import build_tiny_gemma3  # noqa: E402

CONDITIONS = [Condition(), Condition(temperature=0.7, repeat=1), Condition(temperature=0.7, repeat=2),
              Condition(protocol="single_shot")]
VOLATILE = ("latency_s", "cached_tokens")


def _plan(backend, ss, store):
    inf = InferenceParams(batch_size=3, max_tokens=6)
    specs = []
    for c in CONDITIONS:  # the first two batches of each condition are the plan's current ones
        kept = plan_condition(backend, ss, c, c.options(inf), store, batch_size=3)[:2]
        store.set_current(kept[0].folder, [s.key for s in kept])
        specs += kept
    return specs


def test_image_major_equals_condition_at_a_time(tmp_path_factory, small_set, small_params):
    model = build_tiny_gemma3(tmp_path_factory.mktemp("m") / "g3")
    ss = load_stimulus_set(small_set, small_params.study)
    emotions = small_params.study.emotions
    single = MlxBackend(str(model), share_first_turn=0)
    shared = MlxBackend(str(model), share_first_turn=2)
    a_store = PredictionStore(tmp_path_factory.mktemp("a"))
    b_store = PredictionStore(tmp_path_factory.mktemp("b"))
    a_specs, b_specs = _plan(single, ss, a_store), _plan(shared, ss, b_store)

    groups = group_image_major(b_specs, emotions)
    # per batch index: the three context-carry conditions together, single-shot on its own
    assert [[s.condition.condition_id for s in g] for g in groups] == [
        ["context_carry_t0_r1", "context_carry_t0.7_r1", "context_carry_t0.7_r2"],
        ["context_carry_t0_r1", "context_carry_t0.7_r1", "context_carry_t0.7_r2"],
        ["single_shot_t0_r1"], ["single_shot_t0_r1"]]

    calls_a = sum(run_specs(single, [s for s in a_specs if s.condition == c.work()], a_store,
                            emotions) for c in CONDITIONS)
    calls_b = run_image_major(shared, b_specs, b_store, emotions)
    assert calls_a == calls_b == 6 * 3 * 3 + 6
    # 6 images: encoded once each for the three context-carry conditions, once each for single-shot
    assert shared.stats["vision_encodes"] == 6 + 6
    assert single.stats["vision_encodes"] == 6 * 3 + 6
    assert shared.stats["prefill_tokens"] < single.stats["prefill_tokens"]

    for sa, sb in zip(a_specs, b_specs, strict=True):
        assert sa.key == sb.key  # the content key does not depend on the schedule
        ra = pl.read_parquet(a_store.batch_file(sa.folder, sa.index, "parquet")).drop(VOLATILE)
        rb = pl.read_parquet(b_store.batch_file(sb.folder, sb.index, "parquet")).drop(VOLATILE)
        assert ra.equals(rb)
    la = a_store.read_logits(a_specs[0].folder)
    lb = b_store.read_logits(b_specs[0].folder)
    np.testing.assert_array_equal(la["digit_logprobs"], lb["digit_logprobs"])
    np.testing.assert_array_equal(la["top_logprobs"], lb["top_logprobs"])

    # a second run finds every batch stored and calls nothing
    assert run_image_major(shared, b_specs, b_store, emotions) == 0
