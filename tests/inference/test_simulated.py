"""The simulated rater: deterministic per seed, and every knob moves what it should."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from emoface.backends.base import PermanentBackendError
from emoface.backends.simulated import SimulatedBackend, parse_model_name, world_from_tables
from emoface.config import InferenceParams, Params, StimuliParams
from emoface.inference.conditions import Condition
from emoface.inference.engine import stimulus_inputs
from emoface.inference.runner import run_batch
from emoface.paths import StimulusSetPaths
from emoface.stimuli.generate import generate_stimulus_set
from emoface.stimuli.store import load_stimulus_set

EMOTIONS = Params().study.emotions


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """480 stimuli: enough for the knob effects to show clearly."""
    p = Params(stimuli=StimuliParams(identities_per_cell=20))
    out = StimulusSetPaths(tmp_path_factory.mktemp("sim") / "medium")
    generate_stimulus_set(p.study, p.stimuli, out)
    ss = load_stimulus_set(out, p.study)
    world = world_from_tables(ss.manifest, pl.read_parquet(out.latents), ss.norms)
    return ss, world, stimulus_inputs(ss)


def rate(medium, name, condition=None, labels=None) -> pl.DataFrame:
    ss, world, stims = medium
    condition = condition or Condition()
    be = SimulatedBackend(name, world, emotions=EMOTIONS)
    rows, _ = run_batch(be, stims, condition, EMOTIONS, condition.options(InferenceParams()),
                        labels=labels)
    return pl.DataFrame(rows).join(ss.manifest.select("stimulus_id", "race",
                                                      pl.col("emotion").alias("intended")),
                                   on="stimulus_id")


def within_sd(df: pl.DataFrame, field: str = "arousal", by: str = "intended") -> float:
    return df.group_by(by).agg(pl.col(field).std()).select(pl.col(field).mean()).item()


def fpr(df: pl.DataFrame, race: str) -> float:
    d = df.filter((pl.col("intended") != "angry") & (pl.col("race") == race))
    return float((d["emotion"] == "angry").mean())


def test_rows_are_stamped_simulated_and_deterministic(medium):
    a, b = rate(medium, "gemma3-4b"), rate(medium, "gemma3-4b")
    cols = ["stimulus_id", "emotion", "valence", "arousal", "raw_answers"]
    assert a.select(cols).equals(b.select(cols))
    assert a["simulated"].all() and set(a["backend"]) == {"simulated"}


def test_temperature_repeats_differ_and_t0_repeats_are_one_work(medium):
    assert Condition(repeat=3).condition_id == Condition().condition_id
    r1 = rate(medium, "gemma3-4b", Condition(temperature=0.7, repeat=1))
    r2 = rate(medium, "gemma3-4b", Condition(temperature=0.7, repeat=2))
    r1b = rate(medium, "gemma3-4b", Condition(temperature=0.7, repeat=1))
    assert (r1["arousal"] != r2["arousal"]).sum() > 50
    assert r1.select("arousal").equals(r1b.select("arousal"))


def test_temperature_spreads_ratings(medium):
    sds = [within_sd(rate(medium, "gemma3-4b", Condition(temperature=t))) for t in (0, 0.7, 1.0)]
    assert sds[0] < sds[1] < sds[2]


def test_anger_bias_targets_one_race(medium):
    none = rate(medium, "gemma3-4b?anger_bias=0")
    strong = rate(medium, "gemma3-4b?anger_bias=2")
    assert fpr(strong, "black") > fpr(none, "black") + 0.05
    assert fpr(strong, "korean") == pytest.approx(fpr(none, "korean"))


def test_anchoring_and_single_shot(medium):
    strong = within_sd(rate(medium, "gemma3-4b?anchoring_context=0.95"))
    weak = within_sd(rate(medium, "gemma3-4b?anchoring_context=0.1"))
    assert strong < weak
    carry = within_sd(rate(medium, "gemma3-4b"))
    single = within_sd(rate(medium, "gemma3-4b", Condition(protocol="single_shot")))
    assert single > carry


def test_collapse_and_fp16(medium):
    assert within_sd(rate(medium, "gemma3-4b?collapse=3")) < within_sd(
        rate(medium, "gemma3-4b?collapse=0"))
    # within the model's own label, so misclassifications (identical in both) do not dilute it
    assert within_sd(rate(medium, "gemma3-4b-fp16?fp16_restore=0.9"), by="emotion") > within_sd(
        rate(medium, "gemma3-4b"), by="emotion")


def test_text_only_is_the_label_prior(medium):
    ss, _, _ = medium
    labels = dict(ss.manifest.select("stimulus_id", "emotion").iter_rows())
    df = rate(medium, "gemma3-4b?odd_answer_rate=0",
              Condition(protocol="text_only", label_source="intended"), labels=labels)
    per_label = df.group_by("label_given").agg(pl.col("arousal").n_unique())
    assert per_label["arousal"].max() == 1  # identical prompt -> identical answer
    assert set(df["emotion_status"]) == {"not_asked"}


def test_odd_answers_exercise_the_parser(medium):
    clean = rate(medium, "gemma3-4b?odd_answer_rate=0")
    odd = rate(medium, "gemma3-4b?odd_answer_rate=0.3")
    assert set(clean["arousal_status"]) <= {"ok", "normalised"}
    assert {"refused", "out_of_range"} <= set(odd["arousal_status"])


def test_hidden_signal_grows_with_depth(medium):
    ss, world, stims = medium
    be = SimulatedBackend("gemma3-4b?hidden_signal=2", world, emotions=EMOTIONS)
    flat = SimulatedBackend("gemma3-4b?hidden_signal=0", world, emotions=EMOTIONS)
    valence = np.array([world[s.sha256].true_valence for s in stims])

    def best_r(backend, layer):
        h = np.stack([backend.hidden_states(s, "")["image_pool"][layer] for s in stims])
        return max(abs(np.corrcoef(h[:, j], valence)[0, 1]) for j in range(h.shape[1]))

    assert best_r(be, 0) < best_r(be, 7)
    assert best_r(flat, 7) < 0.2


def test_dark_knowledge_expectation_varies_while_argmax_collapses(medium):
    ss, world, stims = medium
    be = SimulatedBackend("gemma3-4b", world, emotions=EMOTIONS)
    happy = [s for s, e in zip(stims, ss.manifest["emotion"], strict=True) if e == "happy"]
    lg = np.stack([be.digit_logits(s, "arousal", "happy", "context_carry") for s in happy])
    p = np.exp(lg - np.logaddexp.reduce(lg, axis=1, keepdims=True))
    expected = p @ np.arange(1, 10)
    argmax = lg.argmax(axis=1) + 1
    assert np.std(expected) > 1.5 * np.std(argmax)
    entropy = -(p * np.log(p)).sum(axis=1)
    assert entropy.min() > 0.5  # the model still spreads probability inside the category


def test_unknown_model_and_knob_are_permanent_errors():
    with pytest.raises(PermanentBackendError, match="unknown simulated model"):
        parse_model_name("gpt-9")
    with pytest.raises(PermanentBackendError, match="unknown knob"):
        parse_model_name("gemma3-4b?bogus=1")


def test_arm_noise_is_independent_per_arm_and_off_by_default(medium):
    # the digests of existing models are those of sim-1 before the knob existed (computed with
    # the code of the previous commit), so stored answers stay current
    assert SimulatedBackend("gemma3-4b", {}, emotions=EMOTIONS).info.digest == (
        "sha256:cf2ef64dc92af9bcc7d397a9fee4f73c3d1b818aadd3b71550360f4a0569be03")
    same = "gemma3-4b?anchoring_single=0.6"
    a, b = rate(medium, same), rate(medium, same, Condition(protocol="single_shot"))
    assert (a["arousal"] == b["arousal"]).mean() > 0.95  # without it the arms barely differ
    noisy = same + "&arm_noise_sd=1"
    a, b = rate(medium, noisy), rate(medium, noisy, Condition(protocol="single_shot"))
    assert (a["arousal"] != b["arousal"]).mean() > 0.3
    # equal variance: the within-category SDs of the two arms agree closely (480 images)
    assert within_sd(a) == pytest.approx(within_sd(b), rel=0.1)
