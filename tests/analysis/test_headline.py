"""The DVC headline of an ablation: the first row of its family (or the largest estimate for A9),
five keys in a fixed order, NaN as null, 4 significant digits."""

from __future__ import annotations

import json
import math

import polars as pl

from emoface.ablations import REGISTRY, registry
from emoface.analysis.headline import headline, write_headline


def test_first_row_in_family_and_rounding():
    trend = pl.DataFrame({"model_id": ["m1", "m1", "m2"], "grouping": ["correct", "intended", "x"],
                          "slope": [9.0, 0.123456, 7.0], "slope_low": [0.0, 0.0500001, 0.0],
                          "slope_high": [1.0, 0.2, 1.0], "p_holm": [math.nan, 3.9e-93, 0.5]})
    h = headline("A3", "supports", {"trend": trend})
    assert h == {"outcome": "supports", "estimate": 0.1235, "ci_low": 0.05, "ci_high": 0.2,
                 "p_adj": 3.9e-93}


def test_a9_takes_the_largest_estimate_and_has_no_ci():
    main = pl.DataFrame({"layer": [0, 1, 2], "debiased_cka": [0.1, 0.4, 0.2],
                         "debiased_cka_p": [0.5, 0.01, 0.2]})
    assert headline("A9", "supports", {"main": main}) == {
        "outcome": "supports", "estimate": 0.4, "ci_low": None, "ci_high": None, "p_adj": 0.01}


def test_missing_table_gives_nulls_and_file_keeps_key_order(tmp_path):
    path = write_headline("A1", "cannot_tell", {}, tmp_path)
    assert list(json.loads(path.read_text())) == ["outcome", "estimate", "ci_low", "ci_high",
                                                  "p_adj"]


def test_every_registered_ablation_names_its_headline():
    assert all(REGISTRY[a].headline is not None for a in registry())
