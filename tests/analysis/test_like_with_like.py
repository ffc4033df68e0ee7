"""Like with like (issue 19): one model rating against ONE human rater, and the signal in a
within-category spread. Every expected number is computed by hand here (arithmetic in comments),
never by the code under test."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from emoface.analysis import metrics as M


def _table() -> pl.DataFrame:
    """Seven images: intended, the model's label, its arousal, the human mean, SD and raters."""
    rows = [  # id, intended, label, status, arousal, human mean, human SD, raters
        ("s1", "angry", "angry", "ok", 2, 3, 2, 5),
        ("s2", "angry", "angry", "ok", 4, 5, 1, 2),
        ("s3", "angry", "sad", "ok", 6, 4, 2, 1),
        ("s4", "sad", "sad", "ok", 1, 2, 1, 2),
        ("s5", "sad", "sad", "normalised", 3, 2, 1, 2),
        ("s6", "sad", "angry", "ok", 5, 6, 1, 2),
        ("s7", "sad", None, "refused", 7, 8, 1, 2),
    ]
    col = list(zip(*rows, strict=True))
    return pl.DataFrame({
        "stimulus_id": col[0], "intended": col[1], "emotion": col[2], "emotion_status": col[3],
        "arousal": [float(v) for v in col[4]], "arousal_mean": [float(v) for v in col[5]],
        "arousal_sd": [float(v) for v in col[6]], "n_raters": list(col[7]),
        "valence": [float(v) for v in col[4]], "valence_mean": [float(v) for v in col[5]],
        "valence_sd": [float(v) for v in col[6]],
        "identity": [f"id{i}" for i in range(7)], "simulated": [True] * 7})


def test_rater_noise_is_the_variance_the_means_do_not_carry():
    # (1 - 1/n) s^2: 4 * 4/5 = 3.2; 1 * 1/2 = 0.5; one rater adds nothing: 0
    got = M.rater_noise_variance(np.array([2.0, 1.0, 2.0]), np.array([5, 2, 1]))
    assert got.tolist() == pytest.approx([3.2, 0.5, 0.0])


def test_single_rater_within_category_sd_by_hand():
    # angry (s1-s3): means 3, 5, 4 -> variance 2 / 2 = 1; rater noise 3.2, 0.5, 0 -> mean
    #   1.2333333; one rater: sqrt(2.2333333) = 1.4944341
    # sad (s4-s7): means 2, 2, 6, 8 -> variance 27 / 3 = 9; noise 0.5 each -> sqrt(9.5) = 3.0822070
    # mean over the categories: 2.2883206 (the means alone give (1 + 3) / 2 = 2)
    df = _table()
    assert M.single_rater_within_category_sd(df, "arousal", rated="arousal") == pytest.approx(
        2.2883206, abs=1e-7)
    assert M.within_category_sd(df, "arousal_mean", rated="arousal") == pytest.approx(2.0)


def test_single_rater_sd_on_correctly_labelled_images_by_hand():
    # angry: s1, s2 -> means 3, 5 (variance 2) + noise (3.2 + 0.5) / 2 = 1.85 -> sqrt(3.85)
    #   = 1.9621417; sad: s4, s5 -> means 2, 2 (variance 0) + 0.5 -> 0.7071068; mean 1.3346242
    got = M.single_rater_within_category_sd(_table(), "arousal", by="correct")
    assert got == pytest.approx(1.3346242, abs=1e-7)


def test_one_rater_per_image_is_its_own_reference():
    # with n = 1 the "mean" is one rater's answer: the reference is the means' SD (2.0 above)
    df = _table().with_columns(pl.lit(1).alias("n_raters"))
    assert M.single_rater_within_category_sd(df, "arousal") == pytest.approx(2.0)


def test_single_rater_bootstrap_weights_repeat_rows():
    # integer frequency weights are the same as repeating the rows (here s1 twice, s6 dropped)
    df = _table()
    w = np.array([[2, 1, 1, 1, 1, 0, 1]], float)
    rep = df[[0, 0, 1, 2, 3, 4, 6]]
    got = M.w_grouped_single_rater_sd(df, "arousal", "intended", w)[0]
    assert got == pytest.approx(M.single_rater_within_category_sd(rep, "arousal"))


def test_core_metrics_report_both_references():
    met = M.core_metrics(_table(), ("angry", "sad"), n_boot=50)
    assert met["arousal_human_rater_within_category_sd"] == pytest.approx(2.2883206, abs=1e-7)
    assert met["arousal_human_within_category_sd"] == pytest.approx(2.0)
    assert met["arousal_human_rater_within_correct_sd"] == pytest.approx(1.3346242, abs=1e-7)


def test_without_the_norms_sd_the_reference_is_missing_not_wrong():
    df = _table().drop("arousal_sd")
    assert np.isnan(M.single_rater_within_category_sd(df, "arousal"))
    # a model without ratings (a classifier): missing, not an error
    none = _table().with_columns(pl.lit(None, pl.Float64).alias("arousal"))
    assert np.isnan(M.single_rater_within_category_sd(none, "arousal", rated="arousal"))


# a: x 1 2 3 (mean 2), human 2 4 9 (mean 5): centred x -1 0 1, y -3 -1 4
# b: x 5 5 8 (mean 6), human 1 3 2 (mean 2): centred x -1 -1 2, y -1 1 0
# pooled: sum xy = 3 + 0 + 4 + 1 - 1 + 0 = 7; sum x^2 = 2 + 6 = 8; sum y^2 = 26 + 2 = 28
SIG_X = np.array([1, 2, 3, 5, 5, 8.0])
SIG_Y = np.array([2, 4, 9, 1, 3, 2.0])
SIG_C = np.array(list("aaabbb"))


def test_pooled_within_category_r_and_slope_by_hand():
    r, slope = M.w_within_signal(SIG_X, SIG_Y, SIG_C, np.ones((1, 6)))
    assert r[0] == pytest.approx(7 / np.sqrt(8 * 28))  # 0.4677072
    assert r[0] == pytest.approx(0.4677072, abs=1e-7)
    assert slope[0] == pytest.approx(0.25)  # 7 / 28: model rating on the human mean
    assert M.w_within_slope(SIG_X, SIG_Y, SIG_C, np.ones((1, 6)))[0] == pytest.approx(0.25)
    # the r agrees with the existing pooled within-category r
    assert M.within_pearson(SIG_X, SIG_Y, SIG_C) == pytest.approx(0.4677072, abs=1e-7)


def test_signal_bootstrap_weights_repeat_rows():
    # weights (2, 0, 1, 1, 1, 3) = rows a1 a1 a3 b1 b2 b3 b3 b3: a: x 1 1 3 (mean 5/3),
    # y 2 2 9 (13/3): cross (-2/3)(-7/3) * 2 + (4/3)(14/3) = 28/9 + 56/9 = 84/9; x^2 8/3;
    # y^2 2 * 49/9 + 196/9 = 294/9. b: x 5 5 8 8 8 (6.8), y 1 3 2 2 2 (2): cross
    # (-1.8)(-1) + (-1.8)(1) + 0 = 0; x^2 2 * 3.24 + 3 * 1.44 = 10.8; y^2 2
    # r = (84/9) / sqrt((8/3 + 10.8) (294/9 + 2)) = 9.333333 / sqrt(466.84444) = 0.431967
    # slope = 9.3333 / 34.6667 = 0.2692308
    w = np.array([[2, 0, 1, 1, 1, 3.0]])
    r, slope = M.w_within_signal(SIG_X, SIG_Y, SIG_C, w)
    assert r[0] == pytest.approx(0.431967, abs=1e-6)
    assert slope[0] == pytest.approx(0.2692308, abs=1e-7)


def test_an_independent_raters_slope_is_the_reliability_of_the_means():
    # noise each mean carries, s^2 / n: a 1, 1, 1; b 0.5, 0.5, 0.5
    # sum_c (1 - 1/3) sum v = 2/3 * 3 + 2/3 * 1.5 = 3; centred squares of the means 28
    # -> 1 - 3 / 28 = 0.8928571
    v = np.array([1, 1, 1, 0.5, 0.5, 0.5])
    assert M.w_rater_slope(SIG_Y, v, SIG_C, np.ones((1, 6)))[0] == pytest.approx(
        0.8928571, abs=1e-7)


def test_correct_in_all_conditions():
    from emoface.analysis.common import correct_in_all

    a = _table()
    # s1, s2, s4, s5 correct in a; b also mislabels s2
    b = a.with_columns(pl.when(pl.col("stimulus_id") == "s2").then(pl.lit("sad"))
                       .otherwise(pl.col("emotion")).alias("emotion"))
    assert correct_in_all([a, b]).tolist() == [True, False, False, True, True, False, False]


# --- A11: spreads on the bounded 1-9 scale ----------------------------------------------------

def test_relative_sd_by_hand():
    # largest variance at mean mu on [1, 9]: (mu - 1)(9 - mu) (Bhatia-Davis)
    # mu 5: 16 -> SD 2 is 2 / 4 = 0.5; the two-point distribution on 1 and 9 (SD 4) is 1
    # mu 3: 2 * 6 = 12 -> SD 1 is 1 / sqrt(12) = 0.2886751; a sample SD over n = 4 raters may
    # reach sqrt(12 * 4 / 3) = 4 -> 0.25; on a bound (mu 1) no spread is possible: NaN
    got = M.relative_sd(np.array([2.0, 4.0, 1.0, 0.0]), np.array([5.0, 5.0, 3.0, 1.0]))
    assert got[:3].tolist() == pytest.approx([0.5, 1.0, 0.2886751], abs=1e-7)
    assert np.isnan(got[3])
    assert M.relative_sd(np.array([1.0]), np.array([3.0]), n=np.array([4]))[0] == 0.25
    assert np.isnan(M.relative_sd(np.array([0.0]), np.array([3.0]), n=np.array([1]))[0])


def test_partial_r_by_hand():
    # x 1 2 4 3, y 2 1 4 5, z = (1, t), t 0 1 2 3 (centred -1.5 -.5 .5 1.5, sum of squares 5)
    # x on t: slope 4 / 5 = 0.8 -> residuals -0.3 -0.1 1.1 -0.7 (squares 1.8)
    # y on t: slope 6 / 5 = 1.2 -> residuals 0.8 -1.4 0.4 0.2 (squares 2.8)
    # cross -0.24 + 0.14 + 0.44 - 0.14 = 0.2 -> r = 0.2 / sqrt(5.04) = 0.0890871
    z = np.column_stack([np.ones(4), np.arange(4.0)])
    got = M.w_partial_r(np.array([1, 2, 4, 3.0]), np.array([2, 1, 4, 5.0]), z, np.ones((1, 4)))
    assert got[0] == pytest.approx(0.0890871, abs=1e-7)


def test_human_sd_reliability_by_hand():
    from emoface.ablations.a11_calibration import human_sd_reliability

    # four images, 5 raters each; SDs a: 2, 4; b: 2, 2; residuals after the category means:
    # a -1, +1; b 0, 0 -> variance 2 / (4 - 2) = 1
    # sampling variance of each SD: s^2 / (2 (n - 1)) = s^2 / 8: 0.5, 2, 0.5, 0.5 -> mean 0.875
    # reliability 1 - 0.875 / 1 = 0.125
    sd = np.array([2, 4, 2, 2.0])
    got = human_sd_reliability(np.array([-1, 1, 0, 0.0]), sd, np.full(4, 5), dof=2)
    assert got == pytest.approx(0.125)
    # one rater: the SD is not measured
    assert np.isnan(human_sd_reliability(np.array([-1, 1, 0, 0.0]), sd, np.array([5, 5, 5, 1]),
                                         dof=2))
