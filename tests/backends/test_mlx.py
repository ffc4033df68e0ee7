"""The mlx backend through the real mlx-vlm code on a tiny Gemma3 built by the test suite.

Skipped only where the mlx extra is not installed; CI installs it (make test) and runs these.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlx_vlm", reason="the mlx extra is not installed")
pytestmark = pytest.mark.mlx

from emoface.backends import make_backend  # noqa: E402
from emoface.config import InferenceParams  # noqa: E402
from emoface.inference.conditions import Condition  # noqa: E402
from emoface.inference.engine import run_hidden_states, stimulus_inputs  # noqa: E402
from emoface.inference.runner import run_batch  # noqa: E402
from emoface.inference.store import HiddenStateStore, PredictionStore, batch_key  # noqa: E402
from emoface.prompts import conversations  # noqa: E402
from emoface.stimuli.store import load_stimulus_set  # noqa: E402
from tests.mlx_tiny import build_tiny_gemma3  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_gemma3(tmp_path_factory.mktemp("mlx") / "tiny-gemma3")
    return make_backend(f"mlx/{path}", InferenceParams(), emotions=("angry", "disgusted",
                        "fearful", "happy", "sad", "surprised"))


@pytest.fixture(scope="module")
def stims(small_set, small_params):
    return stimulus_inputs(load_stimulus_set(small_set, small_params.study))


def test_context_carry_reuses_the_kv_cache(tiny, stims, small_params):
    turns = conversations("context_carry", small_params.study.emotions)[0]
    res = tiny.converse(stims[0], turns, Condition().options(InferenceParams()))
    assert len(res) == 3
    assert res[0].cached_tokens == 0
    for prev, cur in zip(res, res[1:], strict=False):
        # everything up to the previous answer is served from the cache: the image (16 tokens
        # here) is prefilled once per conversation, not once per turn
        assert cur.cached_tokens >= prev.prompt_tokens
        prefilled = cur.prompt_tokens - cur.cached_tokens
        # only what was added since the previous turn (its answer, the new question and a few
        # template tokens) is prefilled, never the image and first question again
        assert prefilled <= cur.prompt_tokens - prev.prompt_tokens + 8
        assert prefilled < res[0].prompt_tokens


def test_logits_top50_and_exact_digits(tiny, stims, small_params):
    turns = conversations("context_carry", small_params.study.emotions)[0]
    res = tiny.converse(stims[1], turns, Condition().options(InferenceParams()))
    step = res[1].steps[0]
    assert len(step.top) == 50
    lps = [lp for _, _, lp in step.top]
    assert lps == sorted(lps, reverse=True)
    assert step.digit_logprobs is not None and len(step.digit_logprobs) == 9
    d = np.exp(step.digit_logprobs)
    assert np.all(np.isfinite(d)) and 0 < d.sum() <= 1 + 1e-6
    # the digit log-prob of "7" equals the top-k entry of the single-token "7" when it is listed
    top = {text: lp for _, text, lp in step.top}
    if "7" in top:
        assert step.digit_logprobs[6] >= top["7"] - 1e-9


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(tiny, stims, small_params):
    turns = conversations("context_carry", small_params.study.emotions)[0]
    g1 = [r.text for r in tiny.converse(stims[2], turns, Condition().options(InferenceParams()))]
    g2 = [r.text for r in tiny.converse(stims[2], turns, Condition().options(InferenceParams()))]
    assert g1 == g2
    hot = Condition(temperature=1.0, repeat=2).options(InferenceParams())
    s1 = [r.text for r in tiny.converse(stims[2], turns, hot)]
    s2 = [r.text for r in tiny.converse(stims[2], turns, hot)]
    assert s1 == s2


def test_batch_rows_and_logits_are_stored(tiny, stims, small_params, tmp_path):
    c = Condition()
    opts = c.options(InferenceParams())
    rows, records = run_batch(tiny, stims[:4], c, small_params.study.emotions, opts)
    assert [r["stimulus_id"] for r in rows] == [s.stimulus_id for s in stims[:4]]
    assert all(r["backend"] == "mlx" and not r["simulated"] for r in rows)
    store = PredictionStore(tmp_path)
    folder = store.condition_dir("small", c.condition_id, tiny.info.model_id)
    key = batch_key(c, tiny.info.digest, opts, stims[:4], None, model_id=tiny.info.model_id)
    store.set_current(folder, [key])
    store.write_batch(folder, 0, key, rows, records, small_params.study.emotions)
    lg = store.read_logits(folder)
    rating = np.isin(lg["field"], ("valence", "arousal"))
    assert rating.sum() == 8 and (~rating).sum() == 4  # 4 emotion steps + 8 rating steps
    assert set(lg["source"][rating]) <= {"exact", "none"} and set(lg["source"][~rating]) == {"label"}
    assert lg["digit_logprobs"].shape == (12, 9) and lg["top_logprobs"].shape[1] == 50


def test_hidden_states_per_layer(tiny, small_set, small_params, tmp_path):
    ss = load_stimulus_set(small_set, small_params.study)
    files = run_hidden_states(tiny, ss, HiddenStateStore(tmp_path), small_params.study.emotions,
                              batch_size=20)
    assert len(files) == 2  # the tiny model has 2 decoder layers
    z = np.load(files[1])
    assert z["image_pool"].shape == (48, 64) and z["image_pool"].dtype == np.float16
    assert list(z["stimulus_id"]) == ss.manifest["stimulus_id"].to_list()
    # different images -> different pooled image representations
    assert np.abs(z["image_pool"][0].astype(float) - z["image_pool"][5]).sum() > 0
