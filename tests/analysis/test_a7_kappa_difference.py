"""A7's kappa difference: the identity-cluster SE of kappa by hand, and the studentized
permutation test whose interval agrees with its p."""

from __future__ import annotations

import numpy as np
import pytest

from emoface.ablations.a7_real_faces import kappa_difference_test, kappa_with_cluster_se

# 10 images, 2 categories: agreement table [[4, 1], [1, 4]] -> po = 0.8, pe = 0.5, kappa = 0.6
TRUTH = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
PRED = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])


def test_cluster_se_of_kappa_by_hand():
    # influence of an agreeing row: [(1 - 0.8) 0.5 + (0.8 - 1)(0.5 + 0.5 - 1)] / 0.25 = 0.4;
    # of a disagreeing row: [(0 - 0.8) 0.5 + 0] / 0.25 = -1.6
    # one identity per image: Var = 10/9 (8 x 0.16 + 2 x 2.56) / 100 = 0.071111 (without the
    # 10/9 this is Fleiss, Cohen & Everitt's po (1 - po) / (N (1 - pe)^2) = 0.064)
    kappa, se = kappa_with_cluster_se(TRUTH, PRED, np.arange(10), 2, np.ones((1, 10)))
    assert kappa[0] == pytest.approx(0.6)
    assert se[0] == pytest.approx(np.sqrt(0.064 * 10 / 9))
    # 5 identities of 2 images, the two disagreeing rows paired with agreeing ones:
    # sums 0.4 - 1.6 = -1.2 (twice) and 0.8 (three times): Var = 5/4 (2 x 1.44 + 3 x 0.64) / 100
    order = np.array([0, 4, 5, 9, 1, 2, 3, 6, 7, 8])
    kappa, se = kappa_with_cluster_se(TRUTH[order], PRED[order], np.repeat(np.arange(5), 2), 2,
                                      np.ones((1, 10)))
    assert se[0] == pytest.approx(np.sqrt(5 / 4 * 4.8 / 100))


def _set(rng, n_ids, acc, k=6):
    truth = np.tile(np.arange(k), n_ids)
    ok = rng.random(truth.size) < acc
    pred = np.where(ok, truth, (truth + rng.integers(1, k, truth.size)) % k)
    return truth, pred, [f"i{i}" for i in np.repeat(np.arange(n_ids), k)]


def test_interval_excludes_zero_exactly_when_p_is_below_alpha():
    rng = np.random.default_rng(5)
    seen = set()
    for acc_b in (0.8, 0.75, 0.7, 0.65, 0.6, 0.5):
        r = kappa_difference_test([_set(rng, 30, 0.8), _set(rng, 30, acc_b)], 6, 199, 1, 0.05)
        excludes = r["diff_low"] > 0 or r["diff_high"] < 0
        assert (r["p"] < 0.05) == excludes
        seen.add(excludes)
        assert r["p"] >= 1 / 200
    assert seen == {True, False}  # both sides of the boundary were exercised
