"""Hand-written, vectorised statistics agree with the trusted library function they stand in for
(the hand-written form is kept because it runs over thousands of bootstrap or weight rows at
once; the library is the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from emoface.ablations.a11_calibration import wasserstein_1
from emoface.analysis.metrics import percentile_ci, w_kappa
from emoface.analysis.stats import rho_a


def test_wasserstein_1_equals_scipy():
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(9), size=20), rng.dirichlet(np.ones(9), size=20)
    support = np.arange(1, 10)
    ref = [stats.wasserstein_distance(support, support, a, b) for a, b in zip(p, q, strict=True)]
    assert wasserstein_1(p, q) == pytest.approx(ref, abs=1e-12)


def test_weighted_kappa_rows_equal_sklearn_with_sample_weights():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 6, 200)
    pred = np.where(rng.random(200) < 0.7, truth, rng.integers(0, 6, 200))
    pred[:5] = -1  # excluded (unparseable)
    w = rng.poisson(1.0, size=(3, 200)).astype(float)  # bootstrap-like weights
    got = w_kappa(truth, pred, 6, w)
    keep = pred >= 0
    ref = [cohen_kappa_score(truth[keep], pred[keep], sample_weight=row[keep]) for row in w]
    assert got == pytest.approx(ref, abs=1e-12)


def test_percentile_ci_without_bias_correction_is_the_counting_rules_order_statistics():
    """No bias correction, no ties: the p of a null just above the c-th smallest replicate is
    (c + 1) / (B + 1) per side, and the bounds are the replicates where it crosses alpha / 2
    (worked by hand for B = 999, alpha = 0.05: (c + 1) / 1000 < 0.025 for c <= 23, so K = 24:
    the 24th smallest and the 24th largest replicate). Interpolated quantiles (numpy's default)
    fall between order statistics, and then a CI and its p could disagree."""
    s = np.random.default_rng(3).normal(size=999)
    srt = np.sort(s)
    assert percentile_ci(s, 0.05) == (srt[23], srt[975])
    lo, hi = np.quantile(s, [0.025, 0.975])  # within one order statistic of numpy's quantiles
    assert srt[23] <= lo <= srt[25] and srt[973] <= hi <= srt[975]


def test_rho_a_without_ties_equals_scipy_spearman():
    a, b = np.random.default_rng(4).normal(size=(2, 40))
    assert rho_a(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
