"""The calibration simulator's designs for A10 and A11 (declared beside their ablations): the
knobs plant what the docs say, and the nulls sit on their hypotheses' boundaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emoface.ablations import get
from emoface.analysis.simulate import DESIGNS
from emoface.backends.base import StimulusInput
from emoface.backends.simulated import SimStimulus, SimulatedBackend
from emoface.config import Params

EMOTIONS = Params().study.emotions


def _backend(model: str, human_sd=(1.2, 1.2), arousal=5.0):
    stim = SimStimulus("angry", "korean", np.zeros(13), 4.0, arousal, human_sd)
    be = SimulatedBackend(model.removeprefix("simulated/"), {"h": stim}, emotions=EMOTIONS)
    return be, StimulusInput("s1", Path("/nonexistent"), "h")


def test_designs_come_from_the_registry():
    for aid in ("A10", "A11"):
        assert DESIGNS[aid] is get(aid).simulated_design and DESIGNS[aid].nulls == (0.0,)


@pytest.mark.parametrize(("effect", "variance"), [
    # a human rater's answer to an image with consensus 5.0: round(5 + N(0, 1.2^2)) on 1..9,
    # variance 1.2^2 + 1/12 = 1.5233 (Sheppard's rounding term; clipping at 1 and 9, 3.3 SD
    # away, removes 0.0016: 1.5217)
    (0.0, 1.5217),
    # half the noise: 0.6^2 + 1/12 = 0.4433 (no clipping)
    (0.5, 0.4433),
])
def test_a10_repeats_are_distributed_like_one_human_rater_at_the_null(effect, variance):
    (model,) = DESIGNS["A10"].spec(effect)["models"]
    be, s = _backend(model)
    # each (temperature, seed) is one repeat; digit width 0.05: the answer is the nearest digit
    answers = np.array([np.argmax(be.digit_logits(s, "arousal", "angry", "context_carry",
                                                  (1.0, seed))) + 1 for seed in range(4000)])
    # 4,000 repeats: the sample variance's SE is about 1.52 sqrt(2 / 4000) = 0.034
    assert answers.mean() == pytest.approx(5.0, abs=0.06)
    assert answers.var(ddof=1) == pytest.approx(variance, abs=0.12 if effect == 0 else 0.04)


def test_a10_cannot_plant_less_than_no_noise():
    with pytest.raises(ValueError, match="below 1"):
        DESIGNS["A10"].spec(1.0)


def _width(be, s) -> float:
    # with collapse 0, l_k = -(k - mu)^2 / (2 w^2): the second difference is -1 / w^2
    lg = be.digit_logits(s, "arousal", "angry", "context_carry")
    return float(1 / np.sqrt(-(lg[2] - 2 * lg[1] + lg[0])))


@pytest.mark.parametrize(("link", "human_sd", "width"), [
    (0.0, 1.6, 0.9),  # the null: no link, the default width 0.9
    (0.5, 1.6, 1.1),  # 0.9 + 0.5 (1.6 - 1.2)
    (1.0, 0.7, 0.4),  # 0.9 + 1.0 (0.7 - 1.2)
    (2.0, 0.7, 0.05),  # 0.9 - 1.0 < 0.05: the floor
])
def test_a11_sd_link_widens_the_digits_with_the_human_sd(link, human_sd, width):
    be, s = _backend(f"gemma3-4b?collapse=0&sd_link={link:g}", human_sd=(1.0, human_sd))
    assert _width(be, s) == pytest.approx(width, rel=1e-9)


def test_a11_null_is_the_default_rater_and_keeps_the_bounded_scale():
    null = DESIGNS["A11"].spec(0.0)["models"][0].removeprefix("simulated/")
    be, s = _backend(null, human_sd=(0.4, 2.0))
    ref, _ = _backend("gemma3-4b", human_sd=None)
    # at the null the human SD changes nothing and the model is the default one (same digest)
    assert np.array_equal(be.digit_logits(s, "arousal", "angry", "context_carry"),
                          ref.digit_logits(s, "arousal", "angry", "context_carry"))
    assert be.info.digest == ref.info.digest
    # ... whose digit SD still shrinks near the scale's end (what the analysis adjusts for):
    # width 0.9 around 5 gives SD about 0.9, around 8.9 the digits 10, 11 are cut off
    from emoface.ablations.a11_calibration import digit_moments

    def sd(arousal):
        b, st = _backend("gemma3-4b?collapse=0&anchoring_context=0&perception_noise_sd=0",
                         arousal=arousal)
        lg = b.digit_logits(st, "arousal", "angry", "context_carry")
        p = np.exp(lg - lg.max())
        return float(digit_moments((p / p.sum())[None])["sd"][0])

    assert sd(5.0) == pytest.approx(0.9, abs=0.01) and sd(8.9) < 0.75


def test_a11_link_needs_the_human_sd():
    from emoface.backends.base import PermanentBackendError

    be, s = _backend("gemma3-4b?sd_link=0.5", human_sd=None)
    with pytest.raises(PermanentBackendError, match="sd_link needs the human SDs of s1"):
        be.digit_logits(s, "arousal", "angry", "context_carry")
