"""Every metric definition on small tables computed by hand; the expected numbers are written
here (with the arithmetic in comments), never recomputed by the code under test."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from emoface.ablations.a4_quantization import _range_word
from emoface.ablations.a5_dark_knowledge import digit_distribution
from emoface.ablations.a8_fpr_by_race import _fpr_rows
from emoface.ablations.a9_hidden_states import within_identity_perms
from emoface.analysis import metrics as M
from emoface.analysis import stats as s
from emoface.analysis.common import DEFINITION_SENSITIVE, across_definitions, p_outcome
from emoface.logits import merge_digit_logprobs

EMOTIONS = ("angry", "sad")


def _table() -> pl.DataFrame:
    """Seven images: intended, the model's label (status), its arousal and the human mean."""
    rows = [  # id, intended, label, status, arousal, human
        ("s1", "angry", "angry", "ok", 2, 3),
        ("s2", "angry", "angry", "ok", 4, 5),
        ("s3", "angry", "sad", "ok", 6, 4),
        ("s4", "sad", "sad", "ok", 1, 2),
        ("s5", "sad", "sad", "normalised", 3, 2),
        ("s6", "sad", "angry", "ok", 5, 6),
        ("s7", "sad", None, "refused", 7, 8),
    ]
    return pl.DataFrame({
        "stimulus_id": [r[0] for r in rows], "intended": [r[1] for r in rows],
        "emotion": [r[2] for r in rows], "emotion_status": [r[3] for r in rows],
        "arousal": [float(r[4]) for r in rows], "arousal_mean": [float(r[5]) for r in rows],
        "valence": [float(r[4]) for r in rows], "valence_mean": [float(r[5]) for r in rows],
        "identity": [f"id{i}" for i in range(7)], "simulated": [True] * 7})


def test_within_category_sd_by_intended_emotion():
    # angry: 2, 4, 6 -> SD 2; sad: 1, 3, 5, 7 -> SD sqrt(20/3) = 2.5819889; mean 2.2909944
    assert M.within_category_sd(_table(), "arousal") == pytest.approx(2.2909944, abs=1e-7)
    # humans, same images and groups: angry 3, 5, 4 -> 1; sad 2, 2, 6, 8 -> sqrt(27/3) = 3
    assert M.within_category_sd(_table(), "arousal_mean", rated="arousal") == pytest.approx(2.0)


def test_within_category_sd_on_correctly_labelled_images():
    # angry: s1, s2 -> 2, 4 (SD 1.4142136); sad: s4, s5 -> 1, 3 (SD 1.4142136)
    got = M.within_category_sd(_table(), "arousal", by="correct")
    assert got == pytest.approx(1.4142136, abs=1e-7)
    # humans on the same four images: angry 3, 5 -> 1.4142136; sad 2, 2 -> 0
    assert M.within_category_sd(_table(), "arousal_mean", by="correct") == pytest.approx(
        0.7071068, abs=1e-7)


def test_within_category_sd_by_the_models_own_label():
    # label angry: s1, s2, s6 -> 2, 4, 5: var 14/3 / 2 = 2.3333, SD 1.5275252
    # label sad: s3, s4, s5 -> 6, 1, 3: var 38/3 / 2 = 6.3333, SD 2.5166115; s7 (refused) out
    got = M.within_category_sd(_table(), "arousal", by="label")
    assert got == pytest.approx((1.5275252 + 2.5166115) / 2, abs=1e-7)


def test_within_category_variance_is_the_mean_of_variances():
    # angry var 4, sad var 20/3 -> mean 5.3333333 (not the square of the mean SD, 5.2486)
    assert M.within_category_var(_table(), "arousal") == pytest.approx(5.3333333, abs=1e-7)


def test_bootstrap_grouped_sd_with_unit_weights_equals_the_definition():
    df = _table()
    x = df["arousal"].to_numpy()
    got = M.w_grouped_sd(df, x, "label", np.ones((1, df.height)))
    assert got[0] == pytest.approx((1.5275252 + 2.5166115) / 2, abs=1e-7)


def test_kappa_accuracy_and_the_seven_column_kappa():
    met = M.core_metrics(_table(), EMOTIONS, n_boot=100)
    # usable rows: (a,a) (a,a) (a,s) (s,s) (s,s) (s,a): po = 4/6, pe = .5 -> kappa 1/3
    assert met["kappa"] == pytest.approx(1 / 3)
    assert met["n_excluded"] == 1
    assert met["accuracy"] == pytest.approx(4 / 7)  # the refusal counts as wrong
    # 3 columns (angry, sad, other) over all 7: po = 4/7; rows (3/7, 4/7, 0), columns
    # (3/7, 3/7, 1/7): pe = 9/49 + 12/49 = 3/7 -> kappa (1/7) / (4/7) = 0.25
    assert met["kappa7"] == pytest.approx(0.25)
    assert met["arousal_within_category_sd"] == pytest.approx(2.2909944, abs=1e-7)
    assert met["arousal_human_within_category_sd"] == pytest.approx(2.0)


def test_within_category_pearson_centres_each_category():
    # a: x -1 0 1, y 1 3 2 -> -1 1 0; b: x -1 0 1, y 10 10 13 -> -1 -1 2
    # cov 1 + 0 + 0 + 1 + 0 + 2 = 4; sx2 = 4, sy2 = 8 -> r = 4 / sqrt(32) = 0.7071068
    x = np.array([1, 2, 3, 11, 12, 13.0])
    y = np.array([1, 3, 2, 10, 10, 13.0])
    assert M.within_pearson(x, y, np.array(list("aaabbb"))) == pytest.approx(0.7071068, abs=1e-7)


def test_digit_variants_merge_by_log_sum_exp():
    top = [(1, "7", math.log(0.3)), (2, " 7", math.log(0.2)), (3, "5", math.log(0.1))]
    lp = merge_digit_logprobs(top)
    assert lp[6] == pytest.approx(math.log(0.5))  # "7" + " 7" = 0.3 + 0.2
    assert lp[4] == pytest.approx(math.log(0.1))
    assert np.isnan(lp[[0, 1, 2, 3, 5, 7, 8]]).all()  # absent from the top-k: missing, not 0


def test_digit_distribution_renormalises_known_digits():
    lp = np.full((1, 9), np.nan)
    lp[0, :3] = np.log([0.1, 0.2, 0.3])  # mass 0.6; p = 1/6, 1/3, 1/2
    d = digit_distribution(lp)
    assert d["digit_mass"][0] == pytest.approx(0.6)
    assert d["expected"][0] == pytest.approx(1 / 6 + 2 / 3 + 3 / 2)  # 2.3333
    # H = -(1/6 ln 1/6 + 1/3 ln 1/3 + 1/2 ln 1/2) = 0.2986266 + 0.3662041 + 0.3465736
    assert d["entropy"][0] == pytest.approx(1.0114043, abs=1e-7)
    assert d["argmax"][0] == 3 and d["n_missing"][0] == 6


def test_digit_distribution_survives_underflow():
    # logits far below 0 (exp underflows to 0.0): p must still be 1/3, 2/3 (log-sum-exp)
    lp = np.full((1, 9), np.nan)
    lp[0, 3:5] = [-1000.0, -1000.0 + math.log(2)]
    d = digit_distribution(lp)
    assert d["expected"][0] == pytest.approx(4 / 3 + 10 / 3)  # 4 * 1/3 + 5 * 2/3
    assert d["argmax"][0] == 5


def test_fpr_with_and_without_refusals():
    df = pl.DataFrame({
        "intended": ["sad", "sad", "sad", "sad", "angry"],
        "emotion": ["angry", None, "sad", "fearful", "angry"],
        "emotion_status": ["ok", "refused", "ok", "ok", "ok"],
        "race": ["black"] * 5})
    (row,) = _fpr_rows("m", df, 0.05)
    # 4 non-angry faces: 1 said angry, 1 refusal -> 1/3 over answers, 1/4 over all
    assert row["fpr"] == pytest.approx(1 / 3)
    assert row["fpr_incl_refusals"] == pytest.approx(1 / 4)
    assert row["n_refused_or_unparseable"] == 1 and row["tpr_angry"] == 1.0


def test_identity_block_permutations_stay_within_category():
    ids = np.repeat([f"i{k}" for k in range(5)], 3)
    cats = np.tile(["a", "b", "c"], 5)
    perms = within_identity_perms(cats, ids, 20, np.random.default_rng(0))
    for p in perms:
        assert sorted(p) == list(range(15))
        assert (cats[p] == cats).all()  # never crosses a category
        # one identity permutation for all categories: identity of row k maps consistently
        mapping = {}
        for k, j in enumerate(p):
            assert mapping.setdefault(ids[k], ids[j]) == ids[j]


def test_plan_range_words():
    assert _range_word(0.22, 0.28) == "inside"
    assert _range_word(0.05, 0.15) == "below"
    assert _range_word(0.35, 0.5) == "above"
    assert _range_word(0.1, 0.25) == "overlaps"
    assert _range_word(0.1, 0.5) == "overlaps"


def test_decisions_and_definition_sensitivity():
    assert p_outcome(0.01, 0.3, 0.05) == "supports"
    assert p_outcome(0.01, -0.3, 0.05) == "does_not_support"
    assert p_outcome(0.2, 0.3, 0.05) == "cannot_tell"
    assert across_definitions({"intended": "supports", "correct": "supports",
                               "label": "supports"}) == "supports"
    assert across_definitions({"intended": "cannot_tell", "correct": "supports",
                               "label": "supports"}) == DEFINITION_SENSITIVE


def test_bc_pvalue_by_hand():
    # replicates -10..89 (100), estimate 39.5: half below it -> z0 = 0 (plain percentile);
    # at or below 0: 11 (the tie counts against the test) -> one-sided (11 + 1) / 101,
    # two-sided 24 / 101
    samples = np.arange(-10, 90, dtype=float)
    assert s.bc_pvalue(samples, 39.5) == pytest.approx(24 / 101)
    assert s.bc_one_sided_p(samples, 39.5) == pytest.approx(12 / 101)


def test_equivalence_p_inside_and_outside_the_margin():
    # 1000 replicates, half below the estimate (z0 = 0), none outside +/-0.05: each one-sided
    # share is clipped to 1/1001, so p = 2/1001
    inside = np.linspace(-0.02, 0.02, 1000)
    assert s.equivalence_p(inside, 0.0, 0.05) == pytest.approx(2 / 1001)
    straddling = np.linspace(-0.1, 0.1, 999)
    assert s.equivalence_p(straddling, 0.0, 0.05) > 0.4
