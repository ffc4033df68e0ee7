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
