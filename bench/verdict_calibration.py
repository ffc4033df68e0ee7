"""Do the verdict rules hold their error rates? Simulated replicates per ablation and scenario.

    .venv/bin/python bench/verdict_calibration.py --replicates 200 --out data/bench/calibration

For each ablation, two scenarios of the simulated rater: ``null`` (the effect planted at zero, or
for A1 the scenario where "supports" is wrong) and ``effect`` (the simulator's default profiles,
the effect sizes the plan expects). Each replicate draws a new stimulus sample (stimulus seed =
replicate; the simulator's per-image noise is keyed to it too), simulates every condition the
ablation needs in memory (no images are rendered, nothing is written to the prediction store) and
runs the project's own analysis function on it through an in-memory context. Reported: the share
of replicates with outcome "supports" (the false-positive rate under the null, the power under the
effect), and for A2/A4 the coverage of the planted value (from a 2,880-stimulus population) by
the bias-corrected (BC) interval the analyses use and by the plain percentile interval of the
same bootstrap replicates.

Cheaper than the study, on purpose (stated in docs/verdict-calibration.md): 120 stimuli per
replicate (5 identities per race x gender cell) instead of 1,440 unless --identities says
otherwise; --bootstrap resamples (default 100) instead of 2,000; 99 permutations for A9; A8's
mixed models (descriptive, not in the verdict) are skipped. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emoface.ablations import a8_fpr_by_race as a8_race  # noqa: E402
from emoface.ablations import run_analysis  # noqa: E402
from emoface.ablations.a1_text_only import A1Params  # noqa: E402
from emoface.ablations.a3_temperature import A3Params  # noqa: E402
from emoface.ablations.a4_quantization import A4Params  # noqa: E402
from emoface.ablations.a6_more_models import A6Params  # noqa: E402
from emoface.ablations.a9_hidden_states import A9Params  # noqa: E402
from emoface.analysis import metrics as M  # noqa: E402
from emoface.backends.base import StimulusInput  # noqa: E402
from emoface.backends.simulated import SimStimulus, SimulatedBackend  # noqa: E402
from emoface.config import (  # noqa: E402
    AblationsParams,
    AnalysisParams,
    ModelsParams,
    Params,
    RealFacesParams,
    StimuliParams,
)
from emoface.inference.conditions import Condition  # noqa: E402
from emoface.inference.engine import baseline_labels  # noqa: E402
from emoface.inference.runner import run_batch  # noqa: E402
from emoface.inference.store import _logit_arrays  # noqa: E402
from emoface.stimuli.generate import norms_for, plan_stimuli  # noqa: E402

EMOTIONS = Params().study.emotions
BASE = Condition()
T_GRID = (0.0, 0.5, 1.0)

# (ablation, scenario) -> models (the first is the one whose verdict matters) and knobs
FLAT = "digit_width=0.05&collapse=0&emotion_beta=400"
SCENARIOS: dict[str, dict[str, dict]] = {
    "A1": {"null": {"models": ["simulated/gemma3-4b"]},  # image adds perception: d > margin
           "effect": {"models": ["simulated/gemma3-4b?anchoring_context=1"]}},  # d = 0
    "A2": {"null": {"models": ["simulated/gemma3-4b?anchoring_single=0.6"]},
           "effect": {"models": ["simulated/gemma3-4b"]}},
    "A3": {"null": {"models": [f"simulated/gemma3-4b?{FLAT}"]},
           "effect": {"models": ["simulated/gemma3-4b"]}},
    "A4": {"null": {"fp16": "simulated/gemma3-4b-fp16?fp16_restore=0",
                    "q4": "simulated/gemma3-4b?fp16_restore=0"},
           "effect": {"fp16": "simulated/gemma3-4b-fp16", "q4": "simulated/gemma3-4b"}},
    "A5": {"null": {"models": ["simulated/gemma3-4b?anchoring_context=1"]},
           "effect": {"models": ["simulated/gemma3-4b"]}},
    "A6": {"null": {"models": [f"simulated/{m}?anchoring_context=0&collapse=0&digit_width=0.3"
                               for m in ("gemma3-4b", "llama3.2-vision-11b", "qwen2-vl-7b",
                                         "kimi-vl")]},
           "effect": {"models": [f"simulated/{m}" for m in ("gemma3-4b", "llama3.2-vision-11b",
                                                             "qwen2-vl-7b", "kimi-vl")]}},
    "A7": {"null": {"models": ["simulated/gemma3-4b"], "real": {}},
           "effect": {"models": ["simulated/gemma3-4b"],
                      "real": {"intensity_min": 0.15, "intensity_max": 0.5}}},
    "A8": {"null": {"models": ["simulated/gemma3-4b?anger_bias=0",
                               "simulated/llama3.2-vision-11b?anger_bias=0"]},
           "effect": {"models": ["simulated/gemma3-4b", "simulated/llama3.2-vision-11b"]}},
    "A9": {"null": {"models": ["simulated/gemma3-4b?hidden_signal=0"]},
           "effect": {"models": ["simulated/gemma3-4b"]}},
}


@dataclass
class World:
    """One stimulus sample: design + norms, the simulator's latents, and its inputs."""

    design: pl.DataFrame
    world: dict
    inputs: list
    source: str = "embedded"


def make_world(seed: int, identities: int, **stim) -> World:
    sp = StimuliParams(identities_per_cell=identities, seed=seed, **stim)
    stims, _ = plan_stimuli(Params().study, sp)
    norms, truth = norms_for(stims, sp)
    world, inputs = {}, []
    for s, (tv, ta) in zip(stims, truth.iter_rows(), strict=True):
        # the simulator keys its latents and per-image noise to the image hash: a per-replicate
        # stand-in hash makes the noise differ between replicates
        key = f"{seed}:{s.stimulus_id}"
        world[key] = SimStimulus(s.emotion, s.race, s.expression.as_array(), tv, ta)
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
    """The parts of AnalysisContext the analyses use, over simulated tables held in memory."""

    params: Params
    models: list[str]
    worlds: dict[str, World]
    _cache: dict = field(default_factory=dict)

    @property
    def emotions(self):
        return EMOTIONS

    @property
    def a(self):
        return self.params.analysis

    def design(self, name: str | None = None) -> pl.DataFrame:
        return self.worlds[name or "embedded"].design

    def stimuli(self, name: str | None = None):
        w = self.worlds[name or "embedded"]
        return type("S", (), {"manifest": w.design.with_columns(pl.lit(w.source).alias(
            "source"))})()

    def _run(self, model: str, condition: Condition, name: str):
        key = (model, condition.condition_id, name)
        if key not in self._cache:
            w = self.worlds[name]
            be = SimulatedBackend(model.removeprefix("simulated/"), w.world, emotions=EMOTIONS)
            labels = None
            if condition.label_source == "baseline":
                labels = baseline_labels(self.predictions(model, BASE, name))
            rows, records = run_batch(be, w.inputs, condition, EMOTIONS,
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


def params_for(aid: str, spec: dict, n_boot: int) -> Params:
    models = spec.get("models") or [spec["q4"]]
    ab = AblationsParams(
        A1=A1Params(), A3=A3Params(temperatures=T_GRID, repeats=2),
        A4=A4Params(fp16=spec.get("fp16", "simulated/gemma3-4b-fp16"),
                    q4=spec.get("q4", "simulated/gemma3-4b")),
        A6=A6Params(models=tuple(models[2:]) if aid == "A6" else ()),
        A9=A9Params(model=models[0]))
    return Params(models=ModelsParams(study=tuple(models[:2]), fer=()), ablations=ab,
                  real_faces=RealFacesParams(name="real"),
                  analysis=AnalysisParams(bootstrap=n_boot, permutations=99,
                                          secondary_bootstrap=n_boot))


def _no_lmm(df, field):
    return {"field": field, "converged": True, "optimizers_disagree": False}


def _no_joint(frames, field):
    return {"field": field, "optimizers_disagree": False}


def _estimand(aid: str, spec: dict, ctx, w: np.ndarray) -> np.ndarray:
    """A2's / A4's primary estimand with weights ``w`` (one row per resample), as the analysis
    computes it (intended emotion, arousal, the images both arms rated)."""
    if aid == "A2":
        m = spec["models"][0]
        a, b = ctx.predictions(m), ctx.predictions(m, Condition(protocol="single_shot"))
    else:
        b, a = ctx.predictions(spec["fp16"]), ctx.predictions(spec["q4"])
    keep = a["arousal"].is_not_null().to_numpy() & b["arousal"].is_not_null().to_numpy()
    xa, xb = (d["arousal"].to_numpy().astype(float) for d in (a, b))
    var = aid == "A4"
    sa = M.w_grouped_sd(a, xa, "intended", w, keep, var)
    sb = M.w_grouped_sd(b, xb, "intended", w, keep, var)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sb - sa if aid == "A2" else 1 - sa / sb


def _replicates(aid: str, spec: dict, ctx) -> np.ndarray:
    ids = ctx.predictions(spec["models"][0] if aid == "A2" else spec["q4"])["identity"]
    return _estimand(aid, spec, ctx, M.cluster_weights(ids.to_list(), ctx.a.bootstrap,
                                                       ctx.a.seed))


def one_replicate(args: tuple) -> dict:
    """One (ablation, scenario, replicate): the outcome and the statistic that decides it."""
    aid, scenario, rep, identities, n_boot = args
    t0 = time.process_time()
    a8_race.mixed_model, a8_race.joint_mixed_model = _no_lmm, _no_joint
    spec = SCENARIOS[aid][scenario]
    p = params_for(aid, spec, n_boot)
    worlds = {"embedded": make_world(rep, identities)}
    if aid == "A7":
        worlds["real"] = make_world(10_000 + rep, identities, **spec["real"])
    ctx = MemoryContext(p, list(p.models.study), worlds)
    res = run_analysis(aid, ctx)
    out = {"ablation": aid, "scenario": scenario, "replicate": rep, "outcome": res.outcome,
           "primary": res.metrics.get("outcome_by_grouping", {}).get("intended", res.outcome)}
    main = res.tables["main"]
    if aid in ("A2", "A4"):
        if aid == "A2":
            r = main.filter(pl.col("metric") == "arousal_within_category_sd").row(0, named=True)
            out.update(estimate=r["difference"], low=r["diff_low"], high=r["diff_high"])
        else:
            r = main.filter((pl.col("field") == "arousal") & (pl.col("grouping") == "intended")
                            ).row(0, named=True)
            out.update(estimate=r["restored"], low=r["restored_low"], high=r["restored_high"])
        # the plain percentile interval of the same bootstrap replicates (same weights)
        samples = _replicates(aid, spec, ctx)
        out["low_pct"], out["high_pct"] = M.percentile_ci(samples, p.analysis.alpha)
    elif aid == "A1":
        r = main.filter(pl.col("field") == "arousal").row(0, named=True)
        out.update(estimate=r["diff_human_r"], low=r["diff_boot_low"], high=r["diff_boot_high"])
    out["cpu_s"] = time.process_time() - t0
    return out


def planted_values(identities: int = 120) -> dict[str, float]:
    """The value each coverage check should cover: the same estimand on a 2,880-stimulus
    population (a different seed), computed once."""
    w = make_world(99_999, identities)
    out = {}
    for aid in ("A2", "A4"):
        spec = SCENARIOS[aid]["effect"]
        p = params_for(aid, spec, 100)
        ctx = MemoryContext(p, list(p.models.study), {"embedded": w})
        out[aid] = float(_estimand(aid, spec, ctx, np.ones((1, w.design.height)))[0])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--identities", type=int, default=5,
                    help="identities per race x gender cell (5 -> 120 stimuli; the study: 60)")
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default="A1,A2,A3,A4,A5,A6,A7,A8,A9")
    ap.add_argument("--scenarios", default="null,effect")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "bench" / "calibration")
    args = ap.parse_args(argv)
    ablations = args.only.split(",")
    jobs = [(aid, sc, rep, args.identities, args.bootstrap) for aid in ablations
            for sc in args.scenarios.split(",") for rep in range(1, args.replicates + 1)]
    cov_ids = [a for a in ("A2", "A4") if a in ablations and "effect" in args.scenarios]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one_replicate, jobs, chunksize=4))
    elapsed = time.perf_counter() - t0
    df = pl.DataFrame(rows, infer_schema_length=None)
    args.out.mkdir(parents=True, exist_ok=True)
    df.write_csv(args.out / "replicates.csv")
    summary = df.group_by("ablation", "scenario").agg(
        pl.len().alias("replicates"),
        (pl.col("outcome") == "supports").mean().alias("share_supports"),
        (pl.col("primary") == "supports").mean().alias("share_supports_primary"),
        (pl.col("outcome") == "does_not_support").mean().alias("share_does_not_support"),
        (pl.col("outcome") == "definition_sensitive").mean().alias("share_definition_sensitive"),
    ).sort("ablation", "scenario")
    planted = planted_values() if cov_ids else {}
    coverage = []
    for aid in cov_ids:
        bc = df.filter((pl.col("ablation") == aid) & (pl.col("scenario") == "effect"))
        t = planted[aid]
        coverage.append({
            "ablation": aid, "planted": t, "replicates": bc.height,
            "coverage_bc": float(((bc["low"] <= t) & (t <= bc["high"])).mean()),
            "coverage_percentile": float(((bc["low_pct"] <= t) & (t <= bc["high_pct"])).mean()),
            "mean_estimate": float(bc["estimate"].mean())})
    report = {"command": " ".join(["bench/verdict_calibration.py", *(argv or sys.argv[1:])]),
              "replicates": args.replicates, "stimuli_per_replicate": 24 * args.identities,
              "bootstrap": args.bootstrap, "permutations": 99, "workers": args.workers,
              "elapsed_s": round(elapsed, 1), "summary": summary.to_dicts(),
              "coverage": coverage}
    (args.out / "summary.json").write_text(json.dumps(report, indent=1) + "\n")
    with pl.Config(tbl_rows=40, tbl_cols=10, tbl_width_chars=160):
        print(summary)
        if coverage:
            print(pl.DataFrame(coverage))
    print(f"{len(jobs)} replicates in {elapsed:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
