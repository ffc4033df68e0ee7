"""One counting rule for a bootstrap CI and its p-value (stats.bc_interval): at the boundary the
two can never disagree. Expected numbers are worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from emoface.analysis import metrics as M
from emoface.analysis import stats as s
from emoface.analysis.common import interval_outcome


def _sample(n_below: int, b: int = 1999) -> np.ndarray:
    """B = 1999 replicates: ``n_below`` of them at -1 .. -n_below, the rest at 1, 2, ..."""
    return np.concatenate([-np.arange(1, n_below + 1, dtype=float),
                           np.arange(1, b - n_below + 1, dtype=float)])


def test_boundary_of_the_plain_percentile_rule():
    # z0 = 0 (no estimate), B = 1999, alpha = 0.05: one-sided p = (c + 1) / 2000 with c = the
    # replicates <= 0. c = 48 -> 49/2000 = 0.0245 < 0.025: p = 0.049 < 0.05 and the lower bound
    # s_(K), K = #{c : (c + 1) / 2000 < 0.025} = 49 (c = 0..48), is the first positive
    # replicate (+1) -> excludes 0.
    r = s.bc_interval(_sample(48), None, 0.05)
    assert r.p == pytest.approx(2 * 49 / 2000) and r.low == 1.0
    # c = 49 -> 50/2000 = 0.025, not < 0.025: p = 0.05 (not < alpha) and the lower bound is the
    # 49th smallest replicate = -1 -> contains 0
    r = s.bc_interval(_sample(49), None, 0.05)
    assert r.p == pytest.approx(0.05) and r.low == -1.0
    assert interval_outcome(r.low, r.high) == "cannot_tell"


def test_boundary_with_a_bias_correction():
    # 99 replicates 1..99 shifted so that c of them lie <= 0; the estimate sits between the
    # 59th and the 60th replicate -> share below it 59/99, z0 = Phi^-1(59/99) = 0.2430.
    # one-sided p = Phi(Phi^-1((c + 1) / 100) - 2 z0): c = 0 -> floor 1/100; c = 1 ->
    # Phi(Phi^-1(0.02) - 0.486) = Phi(-2.0537 - 0.4860) = Phi(-2.5397) = 0.00555 < 0.025;
    # c = 3 -> Phi(Phi^-1(0.04) - 0.486) = Phi(-2.2367) = 0.01265; c = 4 -> Phi(-2.1309) = 0.01655;
    # c = 5 -> Phi(-2.0409) = 0.02063; c = 6 -> Phi(-1.9618) = 0.02489 < 0.025;
    # c = 7 -> Phi(Phi^-1(0.08) - 0.486) = Phi(-1.8911) = 0.02930.
    # So K = 7 (c = 0..6): the lower bound is the 7th smallest replicate.
    for c, excluded in ((6, True), (7, False)):
        x = np.arange(1, 100, dtype=float) - c - 0.5  # c replicates below 0
        est = x[59] - 0.5  # 59 replicates below it, none tied
        r = s.bc_interval(x, est, 0.05)
        assert (r.p < 0.05) == excluded
        assert (r.low > 0) == excluded
        assert r.low == x[6]
    assert s.bc_interval(np.arange(1, 100) - 6.5, 53.0, 0.05).p_greater == pytest.approx(
        0.02489, abs=5e-5)


@pytest.mark.parametrize("noise", [0.0, 1e-13, -1e-13, 3e-16])
def test_replicates_tied_with_the_estimate_count_half(noise):
    # B = 9 replicates 1, 2, 3, 3, 4, 5, 6, 7, 8; estimate 3 (give or take last-bit noise, as
    # the same data computed another way gives it): 2 below, 2 tied -> share (2 + 2/2) / 9 = 1/3,
    # z0 = Phi^-1(1/3) = -0.430727. (Counting only s < estimate, the noise alone would decide
    # between 2/9 and 4/9: z0 = -0.7647 or -0.1397.)
    x = np.array([1, 2, 3, 3, 4, 5, 6, 7, 8], float)
    est = 3.0 + noise
    # one-sided levels, u(c) = Phi(Phi^-1((c + 1) / 10) -/+ 2 z0), floor 1/10 (c = 0 too):
    # evidence for theta > null (shift -2 z0 = +0.861455): 0.1, 0.5079, 0.6320, ...
    # evidence for theta < null (shift +2 z0 = -0.861455): c = 0, 1, 2 -> 0.1 (Phi gives 0.0161,
    # 0.0443, 0.0829: the floor), c = 3 -> Phi(-0.2533 - 0.8615) = 0.13247, c = 4 ->
    # Phi(0 - 0.8615) = 0.19449, c = 5 -> Phi(0.2533 - 0.8615) = 0.27156.
    # alpha = 0.3 (alpha / 2 = 0.15): K = #{u < 0.15} = 1 -> low = s_(1) = 1;
    # K' = 4 (c = 0..3) -> high = s_(9 + 1 - 4) = s_(6) = 5. (Without the half weight: 7 or 3.)
    r = s.bc_interval(x, est, 0.3)
    assert (r.low, r.high) == (1.0, 5.0)
    # the p-values by the same levels: null 4.5 -> 4 replicates >= it: p_less = u(4) = 0.19449,
    # p = 0.38898 >= 0.3 (inside the interval); null 5.5 -> 3 replicates >= it: p_less = 0.13247,
    # p = 0.26494 < 0.3 (outside it); null 0 -> none <= it: p_greater = the floor 0.1, p = 0.2
    assert s.bc_interval(x, est, 0.3, 4.5).p_less == pytest.approx(0.19449, abs=1e-5)
    assert s.bc_interval(x, est, 0.3, 4.5).p == pytest.approx(0.38898, abs=1e-5)
    assert s.bc_interval(x, est, 0.3, 5.5).p == pytest.approx(0.26494, abs=1e-5)
    assert s.bc_interval(x, est, 0.3, 0.0).p == pytest.approx(0.2)


def test_ties_with_the_estimate_and_last_bit_noise_in_the_replicates():
    # the replicates themselves a last bit off (as from data computed another way): same answer
    x = np.array([1, 2, 3, 3, 4, 5, 6, 7, 8], float)
    jitter = np.array([0, 0, 1, -1, 0, 0, 0, 0, 0]) * np.spacing(3.0)
    assert s.bc_interval(x + jitter, 3.0, 0.3) == s.bc_interval(x, 3.0, 0.3)
    # every replicate tied with the estimate: share 1/2, z0 = 0; beyond all of them: z0 = 0 too
    flat = np.full(9, 2.0)
    assert s.bc_interval(flat, 2.0 + 1e-15, 0.3) == s.bc_interval(flat, None, 0.3)
    assert s.bc_interval(x, 8.5, 0.3) == s.bc_interval(x, None, 0.3)


def test_ci_and_p_agree_on_every_null_value():
    # the whole promise, on a skewed sample with a bias correction, for many nulls and levels
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 1.0, 500) - 1.5
    est = 0.2
    for alpha in (0.05, 0.01, 0.1):
        r = s.bc_interval(x, est, alpha)
        for null in np.concatenate([x[::4], x[::4] + 1e-12, x[::4] - 1e-12, np.linspace(-3, 8, 60)]):
            p = s.bc_interval(x, est, alpha, null).p
            outside = null < r.low - s.TIE_TOLERANCE or null > r.high + s.TIE_TOLERANCE
            inside_strict = r.low + s.TIE_TOLERANCE < null < r.high - s.TIE_TOLERANCE
            if outside:
                assert p < alpha
            elif inside_strict:
                assert p >= alpha


def test_percentile_ci_is_the_same_rule():
    x = np.arange(-10, 90, dtype=float)
    assert M.percentile_ci(x, 0.05, 39.5) == (s.bc_interval(x, 39.5).low,
                                              s.bc_interval(x, 39.5).high)
    # plain percentile, B = 100: K = #{c : (c + 1) / 101 < 0.025} = 2 (c = 0, 1): 2nd smallest
    assert M.percentile_ci(x, 0.05) == (-9.0, 88.0)
