"""`emoface power`: the A8 simulator through A8's own decision code; Monte Carlo intervals."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from emoface.analysis.power import REGISTRY, power
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


def test_cli_prints_power_and_refuses_bad_input():
    runner = CliRunner()
    res = runner.invoke(app, ["power", "--ablation", "A8", "--identities", "240", "--effect",
                              "0.3", "--replicates", "5"])
    assert res.exit_code == 0, res.output
    assert "effect 0.3: power 1.000 [" in res.output and "Monte Carlo" in res.output
    bad = runner.invoke(app, ["power", "--ablation", "A99", "--replicates", "5"])
    assert bad.exit_code == 2 and "no power simulator for 'A99'" in bad.output
    odd = runner.invoke(app, ["power", "--ablation", "A8", "--identities", "241"])
    assert odd.exit_code == 2 and "multiple of 4" in odd.output
    assert "A8" in REGISTRY
