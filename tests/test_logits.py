"""Stored digit log-probabilities are exact: the float64 log of a float64 probability that exp
gives back bit for bit, so answers written out as probabilities come back in as the same numbers
(emoface.logits.exact_logprobs / logprobs_of; the results-import round trip relies on it)."""

from __future__ import annotations

import numpy as np

from emoface.logits import DigitDistribution, exact_logprobs, logprobs_of


def test_a_log_probability_that_float64_cannot_carry_through_a_probability():
    # exp(-0.1) in float64 is 0.9048374180359595; its log is -0.10000000000000006, not -0.1:
    # both floats have that same probability (exp is many-to-one for |x| < 1), and a file of
    # probabilities cannot say which of them it came from
    p = np.exp(-0.1)
    assert np.log(p) != -0.1 and np.exp(np.log(p)) == p
    # the stored form is the log of the probability, so the probability brings it back
    c = exact_logprobs(np.array([-0.1]))[0]
    assert c == np.log(p) and np.exp(c) == p
    assert logprobs_of(np.array([p]))[0] == c
    # -0.3 survives the trip as it is: nothing to change
    assert exact_logprobs(np.array([-0.3]))[0] == -0.3 == np.log(np.exp(-0.3))


def test_probabilities_written_from_stored_log_probabilities_come_back_bit_for_bit():
    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.exponential(1.0, 20000), -rng.uniform(0, 40, 20000),
                        -rng.uniform(0, 1e-15, 2000), [0.0, -np.inf, np.nan]])
    stored = exact_logprobs(x)
    assert np.array_equal(np.exp(stored), np.exp(x), equal_nan=True)  # the same probabilities
    assert np.array_equal(logprobs_of(np.exp(stored)), stored, equal_nan=True)
    assert np.array_equal(exact_logprobs(stored), stored, equal_nan=True)  # idempotent
    # where exp is one-to-one (|x| >= 1) a value moves only where log(exp(x)) is off by an ulp
    far = np.isfinite(x) & (np.abs(x) >= 1)
    assert np.all(np.abs(stored[far] - x[far]) <= np.spacing(np.abs(x[far])))


def test_probabilities_that_no_float64_exp_gives():
    # a lab's own probabilities: the exact log-probability of exp(log(p)), a probability within
    # the log's resolution of p (relative error <= one ulp of log(p), plus rounding)
    q = np.array([0.1, 0.25, 1 / 3, 1e-12, 0.999999])
    y = logprobs_of(q)
    assert np.all(np.abs(np.exp(y) / q - 1) <= np.spacing(np.abs(y)) + 2 * np.spacing(1.0))
    assert np.array_equal(exact_logprobs(y), y)
    assert logprobs_of(np.array([1.0, 0.0]))[0] == 0.0 and logprobs_of(np.array([0.0]))[0] == -np.inf


def test_digit_distributions_are_stored_exact():
    lp = np.array([-0.1, -2.5, np.nan, -0.05, -9.0, np.nan, np.nan, np.nan, -30.0])
    d = DigitDistribution(lp, "exact")
    assert np.array_equal(d.logprobs, exact_logprobs(lp), equal_nan=True)
    assert d.n_missing == 4
