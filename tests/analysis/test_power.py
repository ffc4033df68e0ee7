"""`emoface power`: A8's simulator and the calibration simulator of the other ablations, through
their own decision code; Monte Carlo intervals; the stored table the report cites."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from emoface.analysis.power import REGISTRY, power, power_curve, power_words, stored_power, wilson
from emoface.cli import app


def test_four_identities_can_never_decide():
    # 1 identity per race x gender cell: 2 arrangements per gender, 4 in all, exact. Swapping
    # both genders' labels flips the sign of the difference, so at least 2 of 4 arrangements are
    # as extreme as the data: p >= 0.5, never "supports", whatever the effect.
    r = power("A8", 4, 0.5, replicates=10, seed=3)
    assert r["power"] == 0.0
    # Wilson 95 % for 0 of 10: upper = z^2 / (n + z^2) = 3.8415 / 13.8415 = 0.2775
    assert (r["mc_low"], r["mc_high"]) == pytest.approx((0.0, 0.2775), abs=1e-4)


def test_a_large_effect_at_study_size_is_found():
    # FPR 0.01 vs 0.31 over 600 faces per race: every replicate is decided
    r = power("A8", 240, 0.3, replicates=10, seed=3)
    assert r["power"] == 1.0
    # Wilson 95 % for 10 of 10: lower = n / (n + z^2) = 10 / 13.8415 = 0.7225
    assert r["mc_low"] == pytest.approx(0.7225, abs=1e-4)
    assert "1,440 stimuli" in r["design"] and "600 non-angry faces per race" in r["design"]


def test_wilson_interval_by_hand():
    # 1 of 4, z = 1.959964, z^2 = 3.841459: centre (0.25 + z^2/8) / (1 + z^2/4) =
    # 0.730182 / 1.960365 = 0.372473; half-width z sqrt(0.25 * 0.75 / 4 + z^2 / 64) /
    # (1 + z^2/4) = 1.959964 * sqrt(0.106898) / 1.960365 = 0.326886
    assert wilson(1, 4) == pytest.approx((0.372473 - 0.326886, 0.372473 + 0.326886), abs=2e-6)


def test_every_decided_ablation_has_a_simulator():
    assert {f"A{i}" for i in range(1, 12)} <= set(REGISTRY)


@pytest.mark.parametrize("aid", ["A2", "A4", "A7"])
def test_pipeline_simulators_run_the_analysis(aid):
    # 20 identities (120 stimuli), 2 studies, 100 resamples: plumbing only
    r = power(aid, 20, REGISTRY[aid].curve_effects[0], replicates=2, seed=5,
              settings={"bootstrap": 100})
    assert r["replicates"] == 2 and r["power"] in (0.0, 0.5, 1.0)
    assert (r["mc_low"], r["mc_high"]) == pytest.approx(wilson(round(2 * r["power"]), 2))
    assert "120 stimuli" in r["design"] and "100 bootstrap resamples" in r["design"]


def test_curve_over_identity_counts():
    rows = power_curve("A8", 240, replicates=3, seed=1, sizes=[4, 8], effect=0.5)
    assert [r["identities"] for r in rows] == [4, 8]
    assert rows[0]["power"] == 0.0  # 4 identities can never decide (see above)


def test_stored_table_nearest_design(tmp_path):
    rows = [{"ablation": "A7", "identities": n, "effect": e, "scenario": sc, "replicates": 200,
             "power": pw, "mc_low": pw - 0.05, "mc_high": pw + 0.05}
            for n, e, sc, pw in [(20, 0.0, "null", 0.05), (20, 0.5, "effect", 0.3),
                                 (240, 0.0, "null", 0.04), (240, 0.5, "effect", 0.9)]]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"effects": {"A7": "harder real set"}, "rows": rows}))
    # 200 identities: nearer 240 than 20
    got = stored_power("A7", 200, path)
    assert [(r["identities"], r["scenario"]) for r in got] == [(240, "effect"), (240, "null")]
    line = power_words("A7", 30, path)
    assert line.startswith("share of simulated studies with 20 identities")
    assert "effect 0.5: 0.30 [0.25, 0.35]; null 0: 0.05 [0.00, 0.10]" in line
    assert power_words("A2", 240, path) == ""
    # a size with nulls only is passed over for the nearest size with a planned effect
    nulls_only = tmp_path / "t2.json"
    nulls_only.write_text(json.dumps({"rows": rows[:3]}))
    assert [(r["identities"], r["scenario"]) for r in stored_power("A7", 240, nulls_only)] == [
        (20, "effect"), (20, "null")]


def _power(args: list[str]):
    return CliRunner().invoke(app, ["power", *args])


def test_cli_prints_power_and_refuses_bad_input():
    res = _power(["--ablation", "A8", "--identities", "240", "--effect",
                              "0.3", "--replicates", "5"])
    assert res.exit_code == 0, res.output
    assert "effect 0.3: power 1.000 [" in res.output and "Monte Carlo" in res.output
    bad = _power(["--ablation", "A99", "--replicates", "5"])
    assert bad.exit_code == 2 and "no power simulator for 'A99'" in bad.output
    odd = _power(["--ablation", "A8", "--identities", "241"])
    assert odd.exit_code == 2 and "multiple of 4" in odd.output
    a1 = _power(["--ablation", "A1", "--identities", "20", "--effect",
                             "0.03", "--replicates", "1"])
    assert a1.exit_code == 2 and "A1" in a1.output and "calibrated" in a1.output


def test_report_cites_stored_power_only_for_cannot_tell():
    from emoface.analysis.report import _power_line

    baseline = {"models": {"simulated/m": {"n": 1440}}}  # 1,440 images rated: 240 identities
    assert _power_line("A8", "supports", baseline) == []
    assert _power_line("A8", "cannot tell", None) == []
    (line,) = _power_line("A8", "cannot tell: models differ (1 supports, 1 cannot tell)",
                          baseline)
    assert line.startswith("**Could it have told?** share of simulated studies with 240 "
                           "identities") and "verdict-calibration.md" in line


@pytest.mark.parametrize(("aid", "identities", "effect"), [
    ("A9", 20, 1.0),  # hidden-state signal at the simulator's default strength
    ("A10", 20, 0.9),  # a tenth of a human rater's noise: ICC near 1 against about 0.5
    ("A11", 40, 1.0),  # digit width following the human SD closely: partial r about 0.9
])
def test_huge_planted_effects_are_always_found(aid, identities, effect):
    r = power(aid, identities, effect, replicates=3, seed=5, settings={"bootstrap": 100})
    assert r["power"] == 1.0
    # Wilson 95 % for 3 of 3: lower = n / (n + z^2) = 3 / 6.8415 = 0.4385
    assert (r["mc_low"], r["mc_high"]) == pytest.approx((0.4385, 1.0), abs=1e-4)


def test_cli_power_and_curve_for_the_extended_ablations():
    res = _power(["--ablation", "A11", "--identities", "40", "--effect",
                              "1.0", "--replicates", "2"])
    assert res.exit_code == 0, res.output
    # Wilson 95 % for 2 of 2: lower = 2 / (2 + 3.8415) = 0.342
    assert "effect 1: power 1.000 [0.342, 1.000]" in res.output and "sd_link" in res.output
    curve = _power(["--ablation", "A10", "--identities", "20", "--curve",
                                "--replicates", "1"])
    assert curve.exit_code == 0, curve.output
    assert [ln.split(":")[0] for ln in curve.output.splitlines() if ": power " in ln] == [
        "effect 0", "effect 0.1", "effect 0.25", "effect 0.5"]
    bad = _power(["--ablation", "A10", "--identities", "20", "--effect",
                              "1", "--replicates", "1"])
    assert bad.exit_code == 2 and "A10" in bad.output and "below 1" in bad.output
