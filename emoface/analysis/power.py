"""Power for planning (``emoface power``): simulate replicates with a planted effect through the
project's own decision code and count how often the ablation says "supports".

Each ablation that can be planned registers a :class:`PowerSimulator` (:func:`register`): a
function that draws ONE replicate of the study's design with the effect planted at a given size
and returns the ablation's combined outcome, computed by the same functions its analysis uses.
:func:`power` runs it ``replicates`` times and reports the share of "supports" with a Wilson
interval for the Monte Carlo error; :func:`power_curve` does so over several effect sizes.
With effect 0 the share is the rule's false-positive rate at that design.

Registered: every ablation with a decision rule that the simulated rater can plant: all but
A8 through the calibration simulator (:mod:`emoface.analysis.simulate`: the
simulated rater answers a new stimulus sample in memory and the ablation's own ``run_analysis``
decides, with the study's bootstrap and permutation counts), their effect a knob of the
simulated rater (``simulate.DESIGNS``); A8 by :func:`simulate_a8`, which plants the FPR
difference itself (absolute, on a Beta-binomial design) and decides with A8's own functions.

:func:`stored_power` reads the committed calibration table (``power_table.json``, written by
``bench/verdict_calibration.py --power-table``) so that the report can say what a "cannot tell"
could have detected at the observed design without simulating anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from emoface.errors import ConfigError

# one replicate: (rng, identities, effect, settings) -> the ablation's combined outcome
Simulate = Callable[[np.random.Generator, int, float, dict], str]


@dataclass(frozen=True)
class PowerSimulator:
    """How to simulate one ablation for power (see the module docstring)."""

    ablation: str
    effect: str  # what --effect means, in words (with its unit)
    simulate: Simulate
    curve_effects: tuple[float, ...]  # the --curve grid
    settings: dict = field(default_factory=dict)  # defaults of the design's other knobs
    identities_multiple: int = 1  # identities must be a multiple of this (the design's cells)
    describe: Callable[[int, float, dict], str] | None = None  # the design, in words


REGISTRY: dict[str, PowerSimulator] = {}


def register(sim: PowerSimulator) -> PowerSimulator:
    REGISTRY[sim.ablation] = sim
    return sim


def _simulator(ablation: str) -> PowerSimulator:
    sim = REGISTRY.get(ablation.upper())
    if sim is None:
        raise ConfigError(f"no power simulator for {ablation!r}; available: "
                          f"{', '.join(sorted(REGISTRY))}")
    return sim


def wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson interval of k successes in n (statsmodels)."""
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return float(lo), float(hi)


def power(ablation: str, identities: int, effect: float, *, replicates: int = 200,
          seed: int = 1, settings: dict | None = None) -> dict:
    """Share of ``replicates`` simulated studies whose outcome is "supports", with its Wilson
    95 % Monte Carlo interval, and the shares of the other outcomes."""
    sim = _simulator(ablation)
    if identities <= 0 or identities % sim.identities_multiple:
        raise ConfigError(f"--identities must be a positive multiple of "
                          f"{sim.identities_multiple} for {sim.ablation} (one per design cell)")
    if replicates < 1:
        raise ConfigError("--replicates must be at least 1")
    s = {**sim.settings, **(settings or {})}
    rng = np.random.default_rng(seed)
    outcomes = [sim.simulate(rng, identities, effect, s) for _ in range(replicates)]
    k = sum(o == "supports" for o in outcomes)
    lo, hi = wilson(k, replicates)
    return {"ablation": sim.ablation, "identities": identities, "effect": effect,
            "replicates": replicates, "power": k / replicates, "mc_low": lo, "mc_high": hi,
            "does_not_support": sum(o == "does_not_support" for o in outcomes) / replicates,
            "design": sim.describe(identities, effect, s) if sim.describe else "",
            "settings": s}


def power_curve(ablation: str, identities: int, effects: Sequence[float] | None = None, *,
                replicates: int = 200, seed: int = 1, settings: dict | None = None,
                sizes: Sequence[int] | None = None, effect: float | None = None) -> list[dict]:
    """:func:`power` over effect sizes (default: the simulator's grid), or with ``sizes`` over
    identity counts at ``effect``."""
    sim = _simulator(ablation)
    if sizes:
        e = sim.curve_effects[-1] if effect is None else effect
        return [power(ablation, n, e, replicates=replicates, seed=seed + i, settings=settings)
                for i, n in enumerate(sizes)]
    return [power(ablation, identities, e, replicates=replicates, seed=seed + i,
                  settings=settings) for i, e in enumerate(effects or sim.curve_effects)]


# --- the stored calibration table (read by the report) --------------------------------------

POWER_TABLE = Path(__file__).with_name("power_table.json")


@cache
def _table(path: Path = POWER_TABLE) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"rows": []}


def stored_power(ablation: str, identities: int, path: Path = POWER_TABLE) -> list[dict]:
    """The stored calibration rows of ``ablation`` at the stored identity count nearest to
    ``identities`` among those with a planned-effect row (else among all), the plan's effect
    first, then the nulls; empty when none is stored."""
    rows = [r for r in _table(path)["rows"] if r["ablation"] == ablation]
    if not rows:
        return []
    sizes = {r["identities"] for r in rows if r["scenario"] == "effect"} or {
        r["identities"] for r in rows}
    n = min(sizes, key=lambda x: (abs(x - identities), -x))
    order = {"effect": 0, "null": 1}
    return sorted((r for r in rows if r["identities"] == n and r["scenario"] in order),
                  key=lambda r: (order[r["scenario"]], r["effect"]))


def power_words(ablation: str, identities: int, path: Path = POWER_TABLE) -> str:
    """One line for a "cannot tell": what the rule finds at (about) this design, from the
    stored table; empty when nothing is stored for the ablation."""
    rows = stored_power(ablation, identities, path)
    if not rows:
        return ""
    effects = _table(path).get("effects", {})
    parts = [f"{'effect' if r['scenario'] == 'effect' else 'null'} "
             f"{r['effect']:g}: {r['power']:.2f} [{r['mc_low']:.2f}, {r['mc_high']:.2f}]"
             for r in rows]
    return (f"share of simulated studies with {rows[0]['identities']} identities that say "
            f"\"supports\" ({rows[0]['replicates']} each, simulated rater, Wilson 95 %; effect "
            f"= {effects.get(ablation, 'see docs/verdict-calibration.md')}): "
            + "; ".join(parts))


# --- through the calibration simulator (every design in simulate.DESIGNS but A8) -----------


def _pipeline(ablation: str) -> Simulate:
    def simulate_study(rng: np.random.Generator, identities: int, effect: float,
                       s: dict) -> str:
        from emoface.analysis import simulate as S
        from emoface.config import AnalysisParams

        boot = s.get("bootstrap")
        a = (AnalysisParams(bootstrap=boot, secondary_bootstrap=boot,
                            permutations=max(99, boot)) if boot else AnalysisParams())
        try:
            out = S.simulate(ablation, effect, int(rng.integers(1, 2**31)), identities, a)
        except ValueError as err:  # an effect the design cannot plant (A1's calibrated d)
            raise ConfigError(f"{ablation}: {err}") from None
        return out[s.get("rule", "outcome")]
    return simulate_study


def _describe_pipeline(ablation: str) -> Callable[[int, float, dict], str]:
    def describe(identities: int, effect: float, s: dict) -> str:
        boot = s.get("bootstrap") or "the study's"
        return (f"{identities} identities ({identities * 6:,} stimuli), simulated rater with "
                f"the effect planted at {effect:g}; {s.get('rule', 'outcome')} of "
                f"{ablation}'s own analysis, {boot} bootstrap resamples")
    return describe


def _register_pipeline() -> None:
    # the designs are data, kept beside the simulator; import it only to read them
    from emoface.analysis.simulate import DESIGNS

    for aid, d in DESIGNS.items():
        if aid == "A8":
            continue  # A8 plants the FPR difference directly (below)
        register(PowerSimulator(
            ablation=aid, effect=d.effect, simulate=_pipeline(aid), curve_effects=d.curve,
            settings={"bootstrap": None, "rule": "outcome"}, identities_multiple=4,
            describe=_describe_pipeline(aid)))


# --- A8 -------------------------------------------------------------------------------------


def simulate_a8(rng: np.random.Generator, identities: int, effect: float, s: dict) -> str:
    """One A8 study: ``identities`` split evenly over 2 races x 2 genders, 5 non-angry faces
    each (the 6 emotions less angry), every face answered. Per identity a false-"angry" rate
    drawn from a Beta with mean FPR(Korean) = ``base_fpr`` or FPR(Black) = base_fpr + ``effect``
    and concentration ``concentration`` (identities differ; larger = less), false answers
    binomial. ``models`` independent models; each decided by A8's own functions
    (identity-level permutation test, Newcombe CI, :func:`fpr_outcome`), Holm over the models,
    combined as the analysis combines them."""
    import polars as pl

    from emoface.ablations.a8_fpr_by_race import fpr_outcome, fpr_permutation_test
    from emoface.analysis import common as C
    from emoface.analysis.stats import newcombe_diff_ci

    alpha, models, faces = s["alpha"], int(s["models"]), int(s["faces_per_identity"])
    n_perm = C.resamples_for_family(int(s["permutations"]), models, alpha, floor_count=1)
    per_cell = identities // 4
    race = np.repeat(["black", "korean"], 2 * per_cell)
    gender = np.tile(np.repeat(["female", "male"], per_cell), 2)
    mean = np.where(race == "black", s["base_fpr"] + effect, s["base_fpr"])
    if not (0 < mean.min() and mean.max() < 1):
        raise ConfigError("base FPR and base FPR + effect must lie strictly between 0 and 1")
    kappa = float(s["concentration"])
    tests = []
    for _ in range(models):
        rate = rng.beta(mean * kappa, (1 - mean) * kappa)
        k = rng.binomial(faces, rate)
        ids = pl.DataFrame({"identity": [f"i{i}" for i in range(identities)], "race": race,
                            "gender": gender, "k": k, "n": np.full(identities, faces)})
        res = fpr_permutation_test(ids, "black", "korean", n_perm,
                                   int(rng.integers(2**31)))
        kb, kk = int(k[race == "black"].sum()), int(k[race == "korean"].sum())
        nb = nk = faces * identities // 2
        lo, hi = newcombe_diff_ci(kb, nb, kk, nk, alpha)
        tests.append({**res, "fpr_diff_low": lo, "fpr_diff_high": hi})
    C.add_holm(tests)
    return C.combine([fpr_outcome(t["p_holm"], t["fpr_diff"], t["fpr_diff_low"],
                                  t["fpr_diff_high"], alpha) for t in tests])


def _describe_a8(identities: int, effect: float, s: dict) -> str:
    faces = int(s["faces_per_identity"]) * identities // 2
    return (f"{identities} identities ({identities * 6:,} stimuli), {faces} non-angry faces per "
            f"race; FPR Korean {s['base_fpr']:.3f} vs Black {s['base_fpr'] + effect:.3f}; "
            f"identity Beta concentration {s['concentration']:g}; {s['models']} model(s), Holm")


register(PowerSimulator(
    ablation="A8", effect="FPR(Black) - FPR(Korean), absolute (0.02 = 2 percentage points)",
    simulate=simulate_a8, curve_effects=(0.0, 0.005, 0.01, 0.02, 0.03, 0.05),
    settings={"base_fpr": 0.01, "concentration": 50.0, "models": 2, "faces_per_identity": 5,
              "alpha": 0.05, "permutations": 1000},
    identities_multiple=4, describe=_describe_a8))

_register_pipeline()
