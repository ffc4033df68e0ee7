"""A8's decision: the identity-level permutation test of the FPR difference (race permuted across
identities within gender), valid with zero cells; numbers worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from emoface.ablations.a8_fpr_by_race import (
    _binary_fits,
    _fpr_rows,
    fpr_outcome,
    fpr_permutation_test,
    identity_counts,
    said_angry_frame,
)
from emoface.analysis.common import resamples_for_family
from emoface.analysis.stats import (
    n_stratified_arrangements,
    newcombe_diff_ci,
    stratified_permutations,
)


def _ids(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["identity", "race", "gender", "k", "n"], orient="row")


TINY = _ids([  # identity, race, gender, false "angry" k, answered non-angry faces n
    ("a", "black", "female", 2, 4), ("b", "black", "female", 1, 4),
    ("c", "korean", "female", 0, 4), ("d", "korean", "female", 0, 4),
    ("e", "black", "male", 1, 4), ("f", "korean", "male", 0, 4)])


def test_exact_permutation_p_on_a_table_enumerated_by_hand():
    # Observed: Black 2 + 1 + 1 = 4 of 12, Korean 0 of 12 -> difference 1/3.
    # Arrangements: women choose 2 Black of {a, b, c, d} (6 ways), men 1 of {e, f} (2 ways): 12.
    # Every n is 4 and k sums to 4, so FPR(Black) - FPR(Korean) = (2 K - 4) / 12 with K the Black
    # k-sum; |difference| >= 1/3 iff K = 4 ({a, b} + e) or K = 0 ({c, d} + f): 2 of 12.
    res = fpr_permutation_test(TINY, "black", "korean", n_perm=1000, seed=1)
    assert res["fpr_diff"] == pytest.approx(1 / 3)
    assert res["permutation_exact"] and res["n_permutations"] == 12
    assert res["p"] == pytest.approx(2 / 12)


def test_permutations_stay_within_gender():
    race = TINY["race"].to_numpy()
    gender = TINY["gender"].to_numpy()
    assert n_stratified_arrangements(race, gender) == 12  # 4! / (2! 2!) x 2! / (1! 1!)
    perms, exact = stratified_permutations(race, gender, 100, np.random.default_rng(0))
    assert exact and len({tuple(p) for p in perms}) == 12
    for p in perms:  # each gender keeps its own race counts
        assert sorted(p[:4]) == ["black", "black", "korean", "korean"]
        assert sorted(p[4:]) == ["black", "korean"]
    # fewer permutations allowed than arrangements: Monte Carlo draws, still within gender
    mc, exact = stratified_permutations(race, gender, 5, np.random.default_rng(0))
    assert not exact and mc.shape == (5, 6)
    assert all(sorted(p[:4]) == ["black", "black", "korean", "korean"] for p in mc)
    res = fpr_permutation_test(TINY, "black", "korean", n_perm=5, seed=1)
    assert res["p"] >= 1 / 6  # (b + 1) / (5 + 1): never 0


def _study_predictions(false_black: int, false_korean: int) -> pl.DataFrame:
    """1,440 stimuli: 240 identities (120 Black, 120 Korean; half women) x 6 emotions, every face
    labelled correctly except ``false_*`` non-angry faces of the first identities said angry."""
    emotions = ["angry", "disgusted", "fearful", "happy", "sad", "surprised"]
    rows = []
    for i in range(240):
        race = "black" if i < 120 else "korean"
        j = i if i < 120 else i - 120
        false = false_black if race == "black" else false_korean
        for e in emotions:
            said = "angry" if (e == "sad" and j < false) else e
            rows.append((f"{race}-{j}-{e}", e, said, "ok", race,
                         "female" if j % 2 else "male", f"{race}-{j}"))
    return pl.DataFrame(rows, orient="row", schema=[
        "stimulus_id", "intended", "emotion", "emotion_status", "race", "gender", "identity"])


def test_one_false_angry_of_600_against_0_is_cannot_tell():
    df = _study_predictions(1, 0)
    rows = {r["race"]: r for r in _fpr_rows("m", df, 0.05)}
    assert (rows["black"]["false_angry"], rows["black"]["n_not_angry"]) == (1, 600)
    assert (rows["korean"]["false_angry"], rows["korean"]["n_not_angry"]) == (0, 600)
    non = said_angry_frame(df)
    ids = identity_counts(non)
    assert ids.height == 240 and ids["n"].sum() == 1200
    res = fpr_permutation_test(ids, "black", "korean", n_perm=1000, seed=7)
    # the one identity with a false "angry" is Black or Korean in every arrangement: |difference|
    # is always 1/600, so every permutation is as extreme as the data: p = (1000 + 1) / 1001
    assert res["fpr_diff"] == pytest.approx(1 / 600)
    assert res["p"] == pytest.approx(1.0)
    lo, hi = newcombe_diff_ci(1, 600, 0, 600)
    assert lo < 0 < hi
    assert fpr_outcome(res["p"], res["fpr_diff"], lo, hi, 0.05) == "cannot_tell"
    # the cluster-robust GLM separates (log OR ~ 20 with SE ~ 1): reported, flagged
    fits = _binary_fits(non, 0.05)
    assert fits["separated"] and fits["glm_separated"] and fits["gee_separated"]


def test_a_clear_difference_is_supported_and_newcombe_must_agree():
    df = _study_predictions(30, 3)  # 30/600 = 0.05 vs 3/600 = 0.005, one per identity
    ids = identity_counts(said_angry_frame(df))
    res = fpr_permutation_test(ids, "black", "korean", n_perm=999, seed=7)
    assert res["fpr_diff"] == pytest.approx(27 / 600)
    # 33 identities with one false "angry" each, 120 of 240 Black: a split as lopsided as 30:3
    # is a hypergeometric tail of ~1e-6, so no permutation reaches it: p = 1 / 1000
    assert res["p"] == pytest.approx(1 / 1000)
    lo, hi = newcombe_diff_ci(30, 600, 3, 600)
    assert lo > 0
    assert fpr_outcome(res["p"], res["fpr_diff"], lo, hi, 0.05) == "supports"
    assert fpr_outcome(res["p"], -res["fpr_diff"], -hi, -lo, 0.05) == "does_not_support"
    # a significant p whose Newcombe interval still straddles 0 decides nothing
    assert fpr_outcome(0.01, 0.002, -0.001, 0.005, 0.05) == "cannot_tell"
    assert fpr_outcome(0.06, 0.05, 0.02, 0.08, 0.05) == "cannot_tell"


def test_tpr_with_both_denominators():
    df = pl.DataFrame({
        "intended": ["angry"] * 4 + ["sad"],
        "emotion": ["angry", None, "sad", "angry", "sad"],
        "emotion_status": ["ok", "refused", "ok", "normalised", "ok"],
        "race": ["black"] * 5})
    (row,) = _fpr_rows("m", df, 0.05)
    # 4 angry faces: 2 said angry, 1 refusal -> 2/3 with refusals dropped, 2/4 counted
    assert row["tpr_angry"] == pytest.approx(2 / 3)
    assert row["tpr_angry_incl_refusals"] == pytest.approx(0.5)
    assert (row["n_angry"], row["n_angry_answered"]) == (4, 3)


def test_resamples_grow_with_the_family():
    # two-sided bootstrap floor 2 / (B + 1); 13 models x 2 / (B + 1) <= 0.05 / 4 needs
    # B + 1 >= 4 x 13 x 2 / 0.05 = 2080 -> B = 2079 (500 could never reach Holm p < 0.05)
    assert resamples_for_family(500, 13, 0.05) == 2079
    assert resamples_for_family(2000, 2, 0.05) == 2000  # 319 needed, 2000 asked
    # permutation floor 1 / (N + 1): 2 models -> N + 1 >= 160
    assert resamples_for_family(99, 2, 0.05, floor_count=1) == 159
