"""Every hand-written method reproduces published values to the digits given.

Sources:
* cocor's tests / Steiger (1980) / Zou (2007): dependent-correlation cases;
* Kornblith et al. (2019) demo notebook: CKA values for np.random.seed(1337);
* statpsych::ci.kappa(.05, 31, 12, 4, 58): kappa, SE and CI;
* Newcombe (1998), Table II: the hybrid-score CI of a difference of proportions;
* hand computations (written in the tests): rho-a with ties (Schuett et al. 2023), Holm.
"""

import numpy as np
import pytest

from emoface.analysis import stats as s


def test_williams_steiger_cocor_case():
    t, p = s.williams_t(.3, .4, .5, 100)
    assert t == pytest.approx(-1.0767, abs=5e-5) and p == pytest.approx(.2843, abs=5e-5)
    z, pz = s.steiger_z(.3, .4, .5, 100)
    assert z == pytest.approx(-1.0718, abs=5e-5) and pz == pytest.approx(.2838, abs=5e-5)


def test_steiger_second_case():
    assert s.steiger_z(.4, .5, .1, 103)[0] == pytest.approx(-0.8887185, abs=5e-8)


def test_zou_ci():
    lo, hi = s.zou_ci(.396, .179, .088, 66)
    assert lo == pytest.approx(-.093, abs=5e-4) and hi == pytest.approx(.517, abs=5e-4)


def test_hotelling():
    assert s.hotelling_t(.612, .541, .466, 157) == pytest.approx(1.158, abs=5e-4)


def test_kappa_statpsych_example():
    k, se, lo, hi = s.cohens_kappa(np.array([[31, 12], [4, 58]]))
    assert k == pytest.approx(0.6756757, abs=5e-8)
    assert se == pytest.approx(0.07344761, abs=5e-8)
    assert lo == pytest.approx(0.5317210, abs=5e-7) and hi == pytest.approx(0.8196303, abs=5e-7)


def test_kappa_balanced_invariant():
    # balanced design: chance agreement 1/6, so kappa = (6 acc - 1) / 5
    rng = np.random.default_rng(0)
    table = np.zeros((6, 6))
    for i in range(6):
        table[i] = rng.multinomial(240, np.eye(6)[i] * 0.6 + 0.4 / 6)
    acc = np.trace(table) / table.sum()
    assert s.cohens_kappa(table)[0] == pytest.approx((6 * acc - 1) / 5, rel=0.05)


def _kornblith_xy():
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    return x, y


def test_cka_kornblith_demo_values():
    x, y = _kornblith_xy()
    assert s.linear_cka(x, y) == pytest.approx(0.55761, abs=5e-6)
    assert s.debiased_cka(x, y) == pytest.approx(0.51346, abs=5e-6)
    assert s.gram_cka(s.gram_rbf(x, 0.5), s.gram_rbf(y, 0.5)) == pytest.approx(0.65483, abs=5e-6)


def test_linear_cka_equals_gram_form():
    x, y = _kornblith_xy()
    assert s.linear_cka(x, y) == pytest.approx(s.gram_cka(x @ x.T, y @ y.T), abs=1e-10)


def test_debiased_cka_removes_dimension_bias():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 1000))  # pure noise, many features
    y = rng.normal(size=(300, 2))
    biased, debiased = s.linear_cka(x, y), s.debiased_cka(x, y)
    assert biased > 0.05  # pure noise looks related under plain linear CKA ...
    assert abs(debiased) < 0.02 and abs(debiased) < biased / 5  # ... and not once debiased


def test_rho_a_matches_spearman_without_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert s.rho_a(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_rho_a_with_ties_by_hand():
    # a = 1, 2, 2, 3 -> ranks 1, 2.5, 2.5, 4; b = 1..4. Centred: (-1.5, 0, 0, 1.5) and
    # (-1.5, -.5, .5, 1.5): sum of products 4.5; rho-a = 12 * 4.5 / (4^3 - 4) = 0.9.
    # (Spearman's r is 4.5 / sqrt(4.5 * 5) = 0.9486833; 1 - 6 sum d^2 / (n^3 - n) = 0.95.)
    assert s.rho_a([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9)


# rsatoolbox (github.com/rsagroup/rsatoolbox, commit f1f83cadb7243492a1aae7460466e0f0140b20ac),
# src/rsatoolbox/rdm/compare.py, compare_rho_a, lines 200-223:
#     vector1 = np.apply_along_axis(scipy.stats.rankdata, 1, vector1)
#     vector2 = np.apply_along_axis(scipy.stats.rankdata, 1, vector2)
#     vector1 = vector1 - np.mean(vector1, 1, keepdims=True)
#     vector2 = vector2 - np.mean(vector2, 1, keepdims=True)
#     n = vector1.shape[1]
#     sim = np.einsum('ij,kj->ik', vector1, vector2) / (n ** 3 - n) * 12
# i.e. rho-a = 12 sum((ra - mean ra)(rb - mean rb)) / (n^3 - n) on tie-averaged ranks. The values
# below were computed by running that function's source (with _parse_input_rdms, lines 658-692,
# given plain vectors) on these inputs; rsatoolbox itself is not a dependency of the project.
RSATOOLBOX_RHO_A = [
    ([1, 2, 2, 3], [1, 2, 3, 4], 0.8999999999999999),
    ([0.5, 0.5, 1.0, 2.0, 2.0, 3.0], [3.0, 1.0, 1.0, 2.0, 5.0, 4.0], 0.5571428571428572),
    ([0.1, 0.4, 0.4, 0.2, 0.9, 0.9, 0.3, 0.7, 0.1, 0.5], [1, 3, 2, 2, 5, 4, 1, 4, 1, 3],
     0.906060606060606),
    # 45 dissimilarities (an RDM of 10 items), many ties; Spearman's r would be 0.8687466
    ([4, 0, 0, 1, 0, 4, 4, 2, 0, 0, 1, 2, 3, 2, 1, 0, 3, 3, 0, 0, 2, 1, 4, 2, 2, 2, 3, 2, 0, 3,
      3, 4, 3, 1, 1, 3, 3, 3, 4, 1, 4, 0, 0, 4, 4],
     [5, 0, 1, 1, 3, 6, 6, 2, 1, 0, 4, 3, 3, 3, 3, 2, 4, 4, 0, 2, 4, 3, 7, 5, 2, 4, 5, 2, 1, 4,
      5, 5, 5, 3, 1, 4, 6, 6, 6, 1, 6, 0, 3, 7, 5], 0.8417325428194994),
]


@pytest.mark.parametrize("a, b, expected", RSATOOLBOX_RHO_A)
def test_rho_a_equals_rsatoolbox_compare_rho_a(a, b, expected):
    assert s.rho_a(np.array(a, float), np.array(b, float)) == pytest.approx(expected, abs=1e-12)


def test_williams_does_not_crash_on_perfect_correlations():
    assert s.williams_t(1.0, 1.0, 1.0, 100) == (0.0, 1.0)
    t, p = s.williams_t(1.0, 0.9, 1.0, 100)  # zero denominator: undefined, not an exception
    assert np.isnan(t) and np.isnan(p)
    res = s.compare_dependent_correlations(1.0, 1.0, 1.0, 100)
    assert res.williams_p == 1.0 and np.isnan(res.zou_low)


def test_newcombe_hybrid_score_interval_published_example():
    # Newcombe (1998), Stat Med 17:873, Table II example (a): 56/70 - 48/80, method 10
    lo, hi = s.newcombe_diff_ci(56, 70, 48, 80)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=5e-5)


def test_holm_by_hand():
    # sorted .01, .03, .04: .01 x 3 = .03; .03 x 2 = .06; .04 x 1 = .04 -> max(.06, .04) = .06
    got = s.holm([0.01, 0.04, 0.03, np.nan])
    assert got[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(got[3])


def test_permutation_p_never_zero():
    assert s.permutation_p(5.0, np.zeros(999)) == pytest.approx(1 / 1000)


def test_vectorised_permutation_cka_equals_the_loop():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(120, 7)), rng.normal(size=(120, 2))
    perms = np.stack([rng.permutation(120) for _ in range(5)])
    fast = s.debiased_cka_permutations(x, y, perms)
    slow = [s.debiased_cka(x, y[p]) for p in perms]
    assert fast == pytest.approx(slow, abs=1e-12)


def test_holm_equals_statsmodels_and_never_collects_garbage(monkeypatch):
    # the same numbers as statsmodels' multipletests (ties, equal p, values whose product > 1),
    # without its gc.collect() per call (counted here, and not run: in a big process each one
    # takes a large fraction of a second)
    import gc

    from statsmodels.stats.multitest import multipletests

    collected: list = []
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(a) or 0)
    rng = np.random.default_rng(7)
    for i in range(300):
        p = rng.random(int(rng.integers(1, 14)))
        if i % 3 == 0:
            p = np.round(p, 1)
        before = len(collected)
        ours = s.holm(p)
        assert len(collected) == before
        assert np.array_equal(ours, multipletests(p, method="holm")[1])
    assert len(collected) == 300  # statsmodels' own collections, which holm() avoids
