"""Simulated studies for calibration and power: the simulated rater answers a freshly drawn
stimulus sample in memory and the project's own analysis (``run_analysis``) decides it.

One way to simulate a study, used by ``bench/verdict_calibration.py`` (false "supports" under
the nulls, power under the effects) and by ``emoface power`` (:mod:`emoface.analysis.power`).

- :func:`make_world` draws one stimulus sample (design, norms and the simulator's latents) with
  the study's generator; ``seed`` keys the sample and the simulator's per-image noise.
- :class:`MemoryContext` is the part of ``AnalysisContext`` the analyses read, over answers the
  simulated rater gives in memory (no images rendered, nothing written).
- :data:`DESIGNS` says, per ablation, what its planted effect is (a knob of the simulated rater,
  in words), which value is the boundary of its hypothesis (the calibration null), where the
  effect size of its "effect" scenario comes from, and the grid of ``--curve``. Designs of the
  ablations outside the plan are declared beside them (``Ablation.simulated_design``) and read
  from the registry; a design may also say how to read the planted quantity (``estimate``) and
  the outcomes of the rule's parts (``part_*``) from a study's result.
- :func:`simulate` runs one study and returns the outcomes that decide (the plan's rule, its
  primary grouping, and for A2/A3/A4/A6 the signal rule).

Nulls plant the boundary of each hypothesis with realistic noise: two arms differ by independent
rating noise of equal variance (the rater's ``arm_noise_sd``); A1 sits on its equivalence margin
(d = +0.05 or -0.05); A6's models have the spread of ONE human rater (ratio 1). The knob values
that put A1 and A6 on their boundaries were found on large simulated populations
(``bench/verdict_calibration.py --tune``; docs/verdict-calibration.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from emoface.ablations import registry, run_analysis
from emoface.ablations.base import SimulatedDesign as Design
from emoface.backends.base import StimulusInput
from emoface.backends.simulated import SimStimulus, SimulatedBackend
from emoface.config import AnalysisParams, ModelsParams, Params, RealFacesParams, StimuliParams
from emoface.inference.conditions import Condition
from emoface.inference.engine import baseline_labels
from emoface.inference.runner import run_batch
from emoface.inference.store import _logit_arrays
from emoface.stimuli.generate import norms_for, plan_stimuli

BASE = Condition()
CELLS = 4  # identities are drawn per race x gender cell
T_GRID = (0.0, 0.5, 1.0)  # A3's temperatures in the simulated studies (2 repeats each)
NORMS_COLUMNS = ("stimulus_id", "valence_mean", "valence_sd", "arousal_mean", "arousal_sd",
                 "n_raters")


@dataclass
class World:
    """One stimulus sample: design + norms, the simulator's latents, and its inputs."""

    design: pl.DataFrame
    world: dict
    inputs: list
    source: str = "embedded"


def make_world(seed: int, identities: int, **stim) -> World:
    """``identities`` in all (a multiple of 4: race x gender cells), 6 images each."""
    sp = StimuliParams(identities_per_cell=identities // CELLS, seed=seed, **stim)
    stims, _ = plan_stimuli(Params().study, sp)
    norms, truth = norms_for(stims, sp)
    world, inputs = {}, []
    for s, (tv, ta), nr in zip(stims, truth.iter_rows(), norms.iter_rows(named=True),
                               strict=True):
        # the simulator keys its latents and per-image noise to the image hash: a per-sample
        # stand-in hash makes the noise differ between samples
        key = f"{seed}:{s.stimulus_id}"
        world[key] = SimStimulus(s.emotion, s.race, s.expression.as_array(), tv, ta,
                                 (nr["valence_sd"], nr["arousal_sd"]))
        inputs.append(StimulusInput(s.stimulus_id, Path("/nonexistent"), key))
    design = pl.DataFrame({"stimulus_id": [s.stimulus_id for s in stims],
                           "intended": [s.emotion for s in stims],
                           "race": [s.race for s in stims], "gender": [s.gender for s in stims],
                           "identity": [s.identity for s in stims],
                           "stimulus_source": ["synthetic"] * len(stims)}).join(
        norms.select("stimulus_id", "valence_mean", "arousal_mean", "valence_sd", "arousal_sd",
                     "n_raters"), on="stimulus_id")
    return World(design, world, inputs)


@dataclass
class MemoryContext:
    """The parts of AnalysisContext the analyses use, over simulated answers held in memory."""

    params: Params
    models: list[str]
    worlds: dict[str, World]
    _cache: dict = field(default_factory=dict)

    @property
    def emotions(self):
        return self.params.study.emotions

    @property
    def a(self):
        return self.params.analysis

    def design(self, name: str | None = None) -> pl.DataFrame:
        return self.worlds[name or "embedded"].design

    def stimuli(self, name: str | None = None):
        w = self.worlds[name or "embedded"]
        return type("S", (), {"manifest": w.design.with_columns(pl.lit(w.source).alias(
            "source")), "norms": w.design.select(NORMS_COLUMNS)})()

    def _run(self, model: str, condition: Condition, name: str):
        key = (model, condition.condition_id, name)
        if key not in self._cache:
            w = self.worlds[name]
            be = SimulatedBackend(model.removeprefix("simulated/"), w.world,
                                  emotions=self.emotions)
            be.max_concurrency = 1  # one process per core: threads only add switching
            labels = None
            if condition.labels_from is not None:
                labels = baseline_labels(self.predictions(model, condition.labels_from, name))
            rows, records = run_batch(be, w.inputs, condition, self.emotions,
                                      condition.options(self.params.inference), labels=labels)
            df = pl.DataFrame(rows).drop("options", "raw_answers", strict=False)
            self._cache[key] = (df.join(w.design, on="stimulus_id").sort("stimulus_id"),
                                _logit_arrays(records), be)
        return self._cache[key]

    def predictions(self, model_id: str, condition: Condition = BASE,
                    set_name: str | None = None) -> pl.DataFrame:
        return self._run(model_id, condition, set_name or "embedded")[0]

    def logits(self, model_id: str, condition: Condition = BASE) -> dict:
        return self._run(model_id, condition, "embedded")[1]

    def hidden_layers(self, model_id: str) -> list[dict]:
        w = self.worlds["embedded"]
        be = self._run(model_id, BASE, "embedded")[2]
        states = [be.hidden_states(s, "q") for s in w.inputs]
        ids = np.array([s.stimulus_id for s in w.inputs])
        n_layers = states[0]["image_pool"].shape[0]
        return [{"stimulus_id": ids,
                 "image_pool": np.stack([s["image_pool"][j] for s in states]),
                 "last_token": np.stack([s["last_token"][j] for s in states])}
                for j in range(n_layers)]


# --- what each ablation's effect is ----------------------------------------------------------

# Calibrated knob values (bench/verdict_calibration.py --tune; docs/verdict-calibration.md):
# A1 (gemma3-4b, arousal): d = r(human, image) - r(human, label-only) is +0.088 at the default
# anchoring 0.6; at anchoring 1 the image rating is the label's prior (d = +0.018: the
# label-only answer's own noise) and noise on the image rating alone lowers d to 0 and to -0.05
# at the values below (5,760-stimulus populations, 2 seeds). +0.05: two populations put it at
# anchoring 0.663, but 40 study-size samples there averaged d = 0.0442 +/- 0.0013, so the
# anchoring was lowered along the populations' slope (docs/verdict-calibration.md).
A1_ANCHORING_AT_PLUS_MARGIN = 0.654
A1_NOISE_AT_ZERO = 0.68
A1_NOISE_AT_MINUS_MARGIN = 1.0
# A6: perception noise at which a model with anchoring 0 and no collapse has the within-category
# arousal SD of one human rater (ratio 0.999, signal ratio 1.003: 5,760-stimulus populations,
# 2 seeds, mean of the four models)
A6_NOISE_AT_RATIO_1 = 1.2
ARM_NOISE = 0.5  # the independent per-arm rating noise of the nulls (SD, scale points)
A6_MODELS = ("gemma3-4b", "llama3.2-vision-11b", "qwen2-vl-7b", "kimi-vl")


def _a1(effect: float) -> dict:
    # effect: the planted d, one of the calibrated values
    knobs = {0.05: f"anchoring_context={A1_ANCHORING_AT_PLUS_MARGIN}",
             0.0: f"anchoring_context=1&arm_noise_sd={A1_NOISE_AT_ZERO}",
             -0.05: f"anchoring_context=1&arm_noise_sd={A1_NOISE_AT_MINUS_MARGIN}",
             0.088: ""}
    if effect not in knobs:
        raise ValueError(f"A1's planted d must be one of {sorted(knobs)} (calibrated values)")
    return {"models": [f"simulated/gemma3-4b?{knobs[effect]}".rstrip("?")]}


def _a2(effect: float) -> dict:
    # effect: anchoring weight of context-carry minus single-shot (0.6 vs 0.6 - effect)
    return {"models": [f"simulated/gemma3-4b?anchoring_context=0.6&anchoring_single="
                       f"{0.6 - effect:g}&arm_noise_sd={ARM_NOISE}"]}


FLAT = "digit_width=0.05&collapse=0&emotion_beta=400"


def _a3(effect: float) -> dict:
    # effect: digit_width (the spread T > 0 samples from); 0.05 = temperature changes nothing
    # but the independent noise of each (T, repeat) condition
    return {"models": [f"simulated/gemma3-4b?digit_width={max(effect, 0.05):g}&collapse=0&"
                       f"emotion_beta=400&arm_noise_sd={ARM_NOISE}"]}


def _a4(effect: float) -> dict:
    # effect: the collapse bonus of the 4-bit model with FP16 fully restored (0 = the two arms
    # differ only by independent noise)
    q = f"collapse={effect:g}&fp16_restore=1&arm_noise_sd={ARM_NOISE}"
    return {"fp16": f"simulated/gemma3-4b-fp16?{q}", "q4": f"simulated/gemma3-4b?{q}"}


def _a5(effect: float) -> dict:
    # effect: weight of perception in the rating, 1 - anchoring_context (0 = E follows the label
    # anchor and noise unrelated to the image)
    return {"models": [f"simulated/gemma3-4b?anchoring_context={1 - effect:g}&"
                       f"arm_noise_sd={ARM_NOISE}"]}


def _a6(effect: float) -> dict:
    # effect: anchoring_context of all four models (0 = each has one human rater's spread)
    return {"models": [f"simulated/{m}?anchoring_context={effect:g}&collapse=0&"
                       f"perception_noise_sd={A6_NOISE_AT_RATIO_1}" for m in A6_MODELS]}


def _a7(effect: float) -> dict:
    # effect: how much harder the real set's expressions are: intensities [0.35 - 0.4 e, 1 - e]
    return {"models": ["simulated/gemma3-4b"],
            "real": {"intensity_min": round(0.35 - 0.4 * effect, 4),
                     "intensity_max": round(1 - effect, 4)}}


def _a8(effect: float) -> dict:
    # effect: anger_bias (logit) of both models on Black faces (0 = no race difference)
    return {"models": [f"simulated/gemma3-4b?anger_bias={effect:g}",
                       f"simulated/llama3.2-vision-11b?anger_bias={effect:g}"]}


def _a9(effect: float) -> dict:
    return {"models": [f"simulated/gemma3-4b?hidden_signal={effect:g}"]}


DESIGNS: dict[str, Design] = {d.ablation: d for d in (
    Design("A1", "planted d = r(human, image) - r(human, label-only), arousal (calibrated values "
           "only: -0.05, 0, 0.05, 0.088 = the simulator's default)", _a1, (0.05, -0.05), 0.0,
           "d = 0, the middle of the equivalence region (the plan's margin is 0.05); "
           "'supports' (equivalence) is right there", (-0.05, 0.0, 0.05, 0.088)),
    Design("A2", "anchoring weight, context-carry minus single-shot (simulator default 0.3)",
           _a2, (0.0,), 0.3, "the simulator's default profile (the plan gives no size)",
           (0.0, 0.1, 0.2, 0.3)),
    Design("A3", "digit-distribution width sampled at T > 0 (0.05: none; simulator default "
           "0.9)", _a3, (0.05,), 0.9, "the simulator's default width (the plan gives no size)",
           (0.05, 0.3, 0.6, 0.9)),
    Design("A4", "collapse bonus of the 4-bit model, FP16 without it (simulator default 1.0)",
           _a4, (0.0,), 1.0, "the simulator's default collapse; the plan's 20-30 % is compared "
           "with the planted share in docs/verdict-calibration.md", (0.0, 0.5, 1.0, 2.0)),
    Design("A5", "weight of perception in the rating, 1 - anchoring (simulator default 0.4)",
           _a5, (0.0,), 0.4, "the simulator's default profile (the plan gives no size)",
           (0.0, 0.1, 0.2, 0.4)),
    Design("A6", "label anchoring of all four models (0: one human rater's spread)", _a6,
           (0.0,), 0.6, "the simulator's default anchoring (the plan gives no size)",
           (0.0, 0.2, 0.4, 0.6)),
    Design("A7", "how much harder the real set is: intensities [0.35 - 0.4 e, 1 - e]", _a7,
           (0.0,), 0.5, "intensities 0.15-0.5 in the real set (the plan gives no size)",
           (0.0, 0.25, 0.5)),
    Design("A8", "anger bias (logit) on Black faces, both models (simulator defaults 0.8, 1.0)",
           _a8, (0.0,), 0.8, "the simulator's default bias (the plan gives no size)",
           (0.0, 0.4, 0.8)),
    Design("A9", "hidden-state signal (simulator default 1.0)", _a9, (0.0,), 1.0,
           "the simulator's default (the plan gives no size)", (0.0, 0.25, 0.5, 1.0)),
)}
# the designs declared beside their ablations (``Ablation.simulated_design``)
DESIGNS.update({a.id: a.simulated_design for a in registry().values()
                if a.simulated_design is not None})


def params_for(aid: str, spec: dict, analysis: AnalysisParams | None = None) -> Params:
    """The study's parameters for one simulated ablation (its models from ``spec``; the
    analysis settings the analyses use unless ``analysis`` says otherwise)."""
    from emoface.ablations.a1_text_only import A1Params
    from emoface.ablations.a3_temperature import A3Params
    from emoface.ablations.a4_quantization import A4Params
    from emoface.ablations.a6_more_models import A6Params
    from emoface.ablations.a9_hidden_states import A9Params
    from emoface.config import AblationsParams

    models = spec.get("models") or [spec["q4"]]
    ab = AblationsParams(
        A1=A1Params(), A3=A3Params(temperatures=T_GRID, repeats=2),
        A4=A4Params(fp16=spec.get("fp16", "simulated/gemma3-4b-fp16"),
                    q4=spec.get("q4", "simulated/gemma3-4b"), self_quantized=None),
        A6=A6Params(models=tuple(models[2:]) if aid == "A6" else ()),
        A9=A9Params(model=models[0]))
    return Params(models=ModelsParams(study=tuple(models[:2]), fer=()), ablations=ab,
                  real_faces=RealFacesParams(name="real"),
                  analysis=analysis or AnalysisParams())


def context(aid: str, effect: float, seed: int, identities: int,
            analysis: AnalysisParams | None = None) -> MemoryContext:
    """One simulated study of ``aid`` with the effect planted at ``effect``."""
    spec = DESIGNS[aid].spec(effect)
    p = params_for(aid, spec, analysis)
    worlds = {"embedded": make_world(seed, identities)}
    if aid == "A7":
        worlds["real"] = make_world(1_000_003 + seed, identities, **spec["real"])
    return MemoryContext(p, list(p.models.study), worlds)


def simulate(aid: str, effect: float, seed: int, identities: int,
             analysis: AnalysisParams | None = None) -> dict:
    """One simulated study decided by the ablation's own analysis: its outcome (``outcome``),
    the primary grouping's (``primary``), and where the ablation has one the signal rule's
    (``signal``, ``signal_primary``) and the two rules' common outcome (``both_rules``); for
    A8 the lowest and highest FPR over models and races (``fpr_min``, ``fpr_max``); for A1 the
    estimate d of arousal (``estimate``)."""
    ctx = context(aid, effect, seed, identities, analysis)
    res = run_analysis(aid, ctx)
    d = DESIGNS[aid]
    extra = ({"estimate": float(d.estimate(res))} if d.estimate else {}) | {
        f"part_{k}": v for k, v in (d.parts(res) if d.parts else {}).items()}
    sig = res.metrics.get("signal") or {}
    fpr = res.tables["main"]["fpr"] if aid == "A8" else None
    main = res.tables["main"]
    est = (main.filter(pl.col("field") == "arousal")["diff_human_r"][0] if aid == "A1"
           else None)
    return {"outcome": res.outcome,
            **({"estimate": float(est)} if est is not None else {}),
            **({"fpr_min": float(fpr.min()), "fpr_max": float(fpr.max())}
               if fpr is not None else {}),
            "primary": res.metrics.get("outcome_by_grouping", {}).get("intended", res.outcome),
            "signal": sig.get("outcome"),
            "signal_primary": (sig.get("outcome_by_grouping") or {}).get("intended",
                                                                        sig.get("outcome")),
            "both_rules": sig.get("both_rules"), **extra}
