"""A10 (test-retest) and A11 (calibration against humans): definitions pinned to published or
independently computed values, then both analyses on a small simulated run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy.stats import wasserstein_distance

from emoface.ablations import run_analysis
from emoface.ablations.a3_temperature import A3Params
from emoface.ablations.a10_test_retest import fleiss_kappa_codes, icc1_from_summary, icc_table
from emoface.ablations.a11_calibration import (
    digit_moments,
    discretised_normal,
    pooled_within_r,
    wasserstein_1,
)
from emoface.analysis.context import AnalysisContext
from emoface.analysis.report import write_report, write_result
from emoface.config import AblationsParams, AnalysisParams, ModelsParams, Params, StimuliParams
from emoface.inference.conditions import Condition
from emoface.inference.service import run_condition_for
from emoface.paths import DataPaths
from emoface.stimuli.generate import generate_stimulus_set

# Shrout & Fleiss (1979), Table 1: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
                          [6, 2, 4, 7]], dtype=float)


def _long(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame([(t, j, x[t, j]) for t in range(x.shape[0]) for j in range(x.shape[1])],
                        columns=["target", "judge", "rating"])


def test_icc_pinned_to_shrout_fleiss_1979():
    res = icc_table(_long(SHROUT_FLEISS), targets="target", raters="judge", ratings="rating")
    # Shrout & Fleiss 1979, Table 4: ICC(2,1) = .29, ICC(3,1) = .71; F = BMS / EMS = 11.24 / 1.02
    assert round(res["icc2"], 2) == 0.29 and round(res["icc3"], 2) == 0.71
    assert res["f"] == pytest.approx(11.03, abs=0.01) and (res["df1"], res["df2"]) == (5, 15)
    # R psych::ICC on the same data (its documented example): ICC2 [0.019, 0.76], ICC3
    # [0.342, 0.95]; full precision, not pingouin's default 2-decimal rounding
    assert res["icc2_low"] == pytest.approx(0.019, abs=5e-4)
    assert res["icc3_low"] == pytest.approx(0.342, abs=5e-4)
    assert res["icc2_high"] == pytest.approx(0.76, abs=5e-3)
    assert res["icc3_high"] == pytest.approx(0.95, abs=5e-3)
    assert res["n_targets"] == 6


def test_human_icc_from_summaries_equals_raw_data_icc1():
    x = SHROUT_FLEISS
    res = icc1_from_summary(x.mean(1), x.std(1, ddof=1), np.full(6, 4))
    # Shrout & Fleiss 1979: BMS = 11.24, WMS = 6.26, ICC(1,1) = .17
    assert res["msb"] == pytest.approx(11.24, abs=0.005)
    assert res["msw"] == pytest.approx(6.26, abs=0.005)
    assert round(res["icc1"], 2) == 0.17
    # and the same interval as pingouin's ICC(1,1) on the raw ratings (psych: [-0.133, 0.72])
    import pingouin as pg

    pg.options["round.column.CI95"] = None
    try:
        raw = pg.intraclass_corr(_long(x), targets="target", raters="judge", ratings="rating")
    finally:
        pg.options["round.column.CI95"] = 2
    ci = next(c for c in raw.columns if c.startswith("CI95"))
    assert res["icc1"] == pytest.approx(raw["ICC"].iloc[0], abs=1e-12)
    assert [res["icc1_low"], res["icc1_high"]] == pytest.approx(list(raw[ci].iloc[0]), abs=1e-9)


def test_human_icc_unbalanced_mean_squares_match_an_anova():
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    rng = np.random.default_rng(3)
    groups = [rng.normal(mu, 1.0, n) for mu, n in zip(rng.normal(5, 1, 30), rng.integers(3, 9, 30),
                                                        strict=True)]
    res = icc1_from_summary(np.array([g.mean() for g in groups]),
                            np.array([g.std(ddof=1) for g in groups]),
                            np.array([g.size for g in groups]))
    df = pd.DataFrame({"y": np.concatenate(groups),
                       "image": np.repeat(np.arange(30), [g.size for g in groups])})
    aov = sm.stats.anova_lm(ols("y ~ C(image)", df).fit())
    assert res["msb"] == pytest.approx(aov["mean_sq"].iloc[0], rel=1e-10)
    assert res["msw"] == pytest.approx(aov["mean_sq"].iloc[1], rel=1e-10)
    n = np.array([g.size for g in groups])
    assert res["n0"] == pytest.approx((n.sum() - (n**2).sum() / n.sum()) / 29)


def test_fleiss_kappa_worked_example():
    # The worked example of Fleiss' kappa (10 subjects, 14 raters, 5 categories): kappa = 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
                      [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
                      [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    codes = np.stack([np.repeat(np.arange(5), row) for row in table])
    assert fleiss_kappa_codes(codes, 5) == pytest.approx(0.210, abs=5e-4)


def test_digit_moments_by_hand():
    uniform = np.full((1, 9), 1 / 9)
    m = digit_moments(uniform)
    assert m["expected"][0] == pytest.approx(5.0)
    assert m["sd"][0] == pytest.approx(np.sqrt(60 / 9))  # variance of 1..9 = (81 - 1) / 12
    assert m["entropy"][0] == pytest.approx(np.log(9))
    point = digit_moments(np.eye(9)[[6]])
    assert (point["expected"][0], point["sd"][0], point["entropy"][0]) == (7.0, 0.0, 0.0)


def test_discretised_normal():
    q = discretised_normal(np.array([5.0, 1.0, 3.2]), np.array([1.0, 2.0, 0.0]))
    assert q.sum(axis=1) == pytest.approx(np.ones(3))
    assert q[0, 4] == pytest.approx(0.3829249, abs=1e-7)  # P(|Z| < 0.5)
    assert q[1, 0] == pytest.approx(0.5 + 0.0987063, abs=1e-7)  # Phi(0.25): left tail folded in
    assert q[2].tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0]  # SD 0: all mass on the nearest digit


def test_wasserstein_matches_scipy():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(9), 50), rng.dirichlet(np.ones(9), 50)
    ours = wasserstein_1(p, q)
    digits = np.arange(1, 10)
    ref = [wasserstein_distance(digits, digits, a, b) for a, b in zip(p, q, strict=True)]
    assert ours == pytest.approx(ref, abs=1e-12)
    assert wasserstein_1(np.eye(9)[[0]], np.eye(9)[[8]])[0] == pytest.approx(8.0)


def test_pooled_within_category_r():
    rng = np.random.default_rng(1)
    cat = np.repeat(["a", "b", "c"], 20)
    x = rng.normal(size=60) + (cat == "b") * 5
    y = x + rng.normal(size=60) - (cat == "c") * 9
    xc = x - pd.Series(x).groupby(cat).transform("mean").to_numpy()
    yc = y - pd.Series(y).groupby(cat).transform("mean").to_numpy()
    assert pooled_within_r(x, y, cat, np.ones((1, 60)))[0] == pytest.approx(
        np.corrcoef(xc, yc)[0, 1])
    # integer bootstrap weights are the same as repeating rows
    w = rng.integers(0, 3, (1, 60)).astype(float)
    rep = np.repeat(np.arange(60), w[0].astype(int))
    assert pooled_within_r(x, y, cat, w)[0] == pytest.approx(
        pooled_within_r(x[rep], y[rep], cat[rep], np.ones((1, rep.size)))[0])


MODEL = "simulated/gemma3-4b"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """96 stimuli; the baseline and A3's T > 0 repeats (T = 0.3 and 1.0, 3 repeats)."""
    data = DataPaths(tmp_path_factory.mktemp("a10") / "data")
    p = Params(stimuli=StimuliParams(identities_per_cell=4),
               models=ModelsParams(study=(MODEL,)),
               ablations=AblationsParams(A3=A3Params(temperatures=(0.0, 0.3, 1.0), repeats=3)),
               analysis=AnalysisParams(bootstrap=200))
    generate_stimulus_set(p.study, p.stimuli, data.stimulus_set("embedded"))
    for c in [Condition(), *(Condition(temperature=t, repeat=r) for t in (0.3, 1.0)
                             for r in (1, 2, 3))]:
        run_condition_for(p, data, MODEL, protocol=c.protocol, temperature=c.temperature,
                          repeat=c.repeat)
    return p, data


def test_a10_on_a_simulated_run(run):
    p, data = run
    res = run_analysis("A10", AnalysisContext(p, data, [MODEL]))
    main = res.tables["main"]
    assert main.height == 2 * 2 and set(main["temperature"]) == {0.3, 1.0}
    for r in main.iter_rows(named=True):
        assert r["icc2_low"] <= r["icc2"] <= r["icc2_high"] and r["n_targets"] == 96
    # sampling noise is what the simulator plants at T > 0: more of it at T = 1 than at T = 0.3
    icc = {r["temperature"]: r["icc2"] for r in main.filter(pl.col("field") == "arousal")
           .iter_rows(named=True)}
    assert icc[1.0] < icc[0.3]
    human = res.tables["human"]
    assert set(human["field"]) == {"valence", "arousal"} and (human["n_targets"] == 96).all()
    kappa = res.tables["fleiss_kappa"]
    assert kappa.height == 2 and ((kappa["kappa_boot_low"] <= kappa["fleiss_kappa"])
                                  & (kappa["fleiss_kappa"] <= kappa["kappa_boot_high"])).all()
    assert res.simulated and res.metrics["temperatures_skipped"] == [0.0]
    assert "humans' single-rater ICC(1,1)" in res.verdict
    # one verdict per temperature, never folded; the reference is named for what it is
    by_t = res.metrics["outcome_by_temperature"]
    assert set(by_t) == {"0.3", "1"} and "T = 0.3: " in res.verdict and "T = 1: " in res.verdict
    assert res.outcome == (by_t["0.3"] if len(set(by_t.values())) == 1
                           else "differs_by_temperature")
    assert "lower bound of one person's test-retest" in res.verdict


def test_a11_on_a_simulated_run(run):
    p, data = run
    ctx = AnalysisContext(p, data, [MODEL])
    res = run_analysis("A11", ctx)
    per = res.tables["per_image"]
    assert per.height == 2 * 96
    # the same expected rating and flags as A5 computes from the same logits
    a5 = run_analysis("A5", ctx).tables["per_image"].select(
        "stimulus_id", "field", pl.col("expected").alias("a5_expected"),
        pl.col("flagged").alias("a5_flagged"))
    both = per.join(a5, on=["stimulus_id", "field"])
    assert both.height == per.height
    assert np.allclose(both["model_expected"], both["a5_expected"], equal_nan=True)
    assert (both["flagged"] == both["a5_flagged"]).all()
    main = res.tables["main"]
    assert set(main["field"]) == {"valence", "arousal"}
    for r in main.iter_rows(named=True):
        assert r["r_sd_low"] <= r["r_sd_human_sd"] <= r["r_sd_high"]
        assert r["n"] + r["n_flagged"] == 96
        # decided on the partial r given both means; the relative SDs as a sensitivity analysis
        assert r["r_partial_low"] <= r["r_partial_means"] <= r["r_partial_high"]
        assert r["r_relative_low"] <= r["r_relative_sd"] <= r["r_relative_high"]
        # the simulator's raters share one noise SD, so the human SDs barely differ beyond
        # their sampling error: the reliability can be <= 0, and then nothing is disattenuated
        rho = r["human_sd_reliability"]
        assert rho <= 1
        if rho > 0:
            assert abs(r["r_partial_disattenuated"]) >= abs(r["r_partial_means"])
        else:
            assert np.isnan(r["r_partial_disattenuated"])
    assert res.metrics["decided_on"] == "r_partial_means"
    assert (per["model_relative_sd"].drop_nans() <= 1 + 1e-9).all()
    assert (per["human_relative_sd"].drop_nans() <= 1 + 1e-9).all()
    assert res.outcome in {"supports", "does_not_support", "cannot_tell"}


def test_results_figures_and_report(run, tmp_path):
    p, data = run
    ctx = AnalysisContext(p, data, [MODEL])
    for aid in ("A10", "A11"):
        folder = write_result(run_analysis(aid, ctx), tmp_path)
        m = json.loads((folder / "metrics.json").read_text())
        assert m["simulated"] is True and m["figures"] and m["verdict"].startswith(aid)
        assert all((folder / "figures" / f).stat().st_size > 1000 for f in m["figures"])
    report = write_report(tmp_path, ["A10", "A11"], []).read_text()
    assert "## A10: test-retest reliability" in report and "## A11: calibration" in report


def test_a10_without_repeats_says_so(run, tmp_path):
    p, data = run
    p1 = p.model_copy(update={"ablations": AblationsParams(A3=A3Params(temperatures=(0.0, 0.3),
                                                                       repeats=1))})
    res = run_analysis("A10", AnalysisContext(p1, data, [MODEL]))
    assert res.outcome == "not_applicable" and "no retest" in res.verdict
    folder = write_result(res, tmp_path)
    assert json.loads((folder / "metrics.json").read_text())["figures"] == []
