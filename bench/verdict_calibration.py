"""Do the verdict rules hold their error rates? Simulated studies per ablation, effect and size.

    .venv/bin/python bench/verdict_calibration.py --only A1 --effects null --identities 240 \\
        --replicates 200 --workers 2 --out data/bench/calibration/A1-null

Each replicate is one simulated study (:func:`emoface.analysis.simulate.simulate`): a new
stimulus sample (seed = replicate), the simulated rater's answers for every condition the
ablation needs, in memory, and the project's own analysis (``run_analysis``) with the analysis
settings the study uses (2,000 bootstrap resamples, 500 for the secondary tables, 1,000
permutations, raised by the resampling-resolution rule) unless ``--bootstrap`` says otherwise.
``--effects``: ``null`` (the boundary of each hypothesis, see ``DESIGNS``), ``plan`` (the
"effect" scenario), ``curve`` (the power-curve grid) or numbers. A8's GLM/GEE and mixed models
are descriptive (not in the verdict) and are skipped. Reported per (ablation, effect,
identities): the share of "supports" of the plan's rule (all groupings, and the primary grouping
alone) and, for A2/A3/A4/A6, of the signal rule and of both rules, each with a Wilson 95 %
Monte Carlo interval; where the design reads them, the parts of the rule (``part_*``: A10 per
temperature, A11's sensitivity adjustments) and the planted quantity as estimated
(``estimate``). ``--tune`` prints the population values that place A1 and A6 on their
boundaries. ``--power-table`` collects summaries into the table the report cites.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emoface.ablations import a8_fpr_by_race as a8_race  # noqa: E402
from emoface.ablations import run_analysis  # noqa: E402
from emoface.analysis import simulate as S  # noqa: E402
from emoface.analysis.power import REGISTRY, wilson  # noqa: E402
from emoface.config import AnalysisParams  # noqa: E402

RULES = ("outcome", "primary", "signal", "signal_primary", "both_rules")


def _descriptive_off() -> None:
    """A8's GLM/GEE and mixed models are reported, never decided on: skip them here."""
    nan = float("nan")
    a8_race.mixed_model = lambda df, f: {"field": f, "converged": True,
                                         "optimizers_disagree": False}
    a8_race.joint_mixed_model = lambda frames, f: {"field": f, "optimizers_disagree": False}
    a8_race._binary_fits = lambda non, alpha: {
        "term": "", "odds_ratio": nan, "or_low": nan, "or_high": nan, "p": nan, "gee_p": nan,
        "glm_separated": False, "gee_separated": False, "separated": False}


def _analysis(boot: int | None) -> AnalysisParams:
    if boot is None:
        return AnalysisParams()
    return AnalysisParams(bootstrap=boot, secondary_bootstrap=boot, permutations=max(99, boot))


def one(job: tuple) -> dict:
    aid, effect, label, rep, identities, boot = job
    t0 = time.process_time()
    out = S.simulate(aid, effect, rep, identities, _analysis(boot))
    return {"ablation": aid, "effect": float(effect), "scenario": label,
            "identities": identities, "replicate": rep, **out,
            "cpu_s": round(time.process_time() - t0, 2)}


def _effects(aid: str, spec: str) -> list[tuple[float, str]]:
    d = S.DESIGNS[aid]
    out = []
    for part in spec.split(","):
        if part == "null":
            out += [(e, "null") for e in d.nulls]
        elif part == "plan":
            out.append((d.plan, "effect"))
        elif part == "curve":
            out += [(e, "curve") for e in d.curve]
        else:
            out.append((float(part), "given"))
    return out


def summarise(df: pl.DataFrame) -> list[dict]:
    rows = []
    for key, g in df.group_by("ablation", "effect", "scenario", "identities",
                              maintain_order=True):
        r = dict(zip(("ablation", "effect", "scenario", "identities"), key, strict=True))
        r.update(stimuli=6 * r["identities"], replicates=g.height)
        parts = [c for c in g.columns if c.startswith("part_") and g[c].drop_nulls().len()]
        for rule in (*RULES, *parts):
            col = g[rule].drop_nulls()
            if col.len() == 0:
                continue
            k = int((col == "supports").sum())
            lo, hi = wilson(k, col.len())
            r[f"{rule}_supports"] = k / col.len()
            r[f"{rule}_ci"] = [round(lo, 4), round(hi, 4)]
            r[f"{rule}_does_not_support"] = float((col == "does_not_support").mean())
            r[f"{rule}_definition_sensitive"] = float((col == "definition_sensitive").mean())
        if "fpr_min" in g.columns and g["fpr_min"].drop_nulls().len():
            r["fpr_range"] = [round(float(g["fpr_min"].min()), 4),
                              round(float(g["fpr_max"].max()), 4)]
            r["fpr_median"] = [round(float(g["fpr_min"].median()), 4),
                               round(float(g["fpr_max"].median()), 4)]
        if "estimate" in g.columns and g["estimate"].drop_nulls().len() > 1:
            e = g["estimate"].drop_nulls()
            r["estimate_mean"] = round(float(e.mean()), 5)
            r["estimate_se"] = round(float(e.std() / np.sqrt(e.len())), 5)
            r["estimate_sd"] = round(float(e.std()), 5)
        r["cpu_s_mean"] = round(float(g["cpu_s"].mean()), 2)
        rows.append(r)
    return rows


def tune(identities: int, seeds: tuple[int, ...], knobs: list[str] | None = None) -> dict:
    """Population values (``identities`` per sample, point estimates averaged over ``seeds``):
    A1's d over the anchoring / noise grid, A6's SD ratio and signal ratio to one human rater."""
    a = AnalysisParams(bootstrap=100, secondary_bootstrap=100, permutations=99)
    out: dict = {"identities": identities, "seeds": list(seeds), "A1": [], "A6": []}
    grid = knobs or ([f"anchoring_context={x}" for x in (0.6, 0.65, 0.7, 0.75, 0.8)]
                     + [f"anchoring_context=1&arm_noise_sd={x}" for x in (0.3, 0.5, 0.7, 0.9,
                                                                          1.2)])
    for knobs in grid:
        d = []
        for seed in seeds:
            m = f"simulated/gemma3-4b?{knobs}"
            ctx = S.MemoryContext(S.params_for("A1", {"models": [m]}, a), [m],
                                  {"embedded": S.make_world(seed, identities)})
            t = run_analysis("A1", ctx).tables["main"].filter(pl.col("field") == "arousal")
            d.append(float(t["diff_human_r"][0]))
        out["A1"].append({"knobs": knobs, "d": float(np.mean(d)), "d_by_seed": d})
        print("A1", knobs, np.mean(d), d, flush=True)
    for noise in () if knobs else (1.1, 1.2, 1.25, 1.3):
        r, sr = [], []
        for seed in seeds:
            models = [f"simulated/{m}?anchoring_context=0&collapse=0&perception_noise_sd={noise}"
                      for m in S.A6_MODELS]
            spec = {"models": models}
            ctx = S.MemoryContext(S.params_for("A6", spec, a), models[:2],
                                  {"embedded": S.make_world(seed, identities)})
            res = run_analysis("A6", ctx)
            sd = res.tables["sd_ratios"].filter(pl.col("grouping") == "intended")
            sg = res.tables["signal"].filter(pl.col("grouping") == "intended")
            r.append(float(sd["ratio"].mean()))
            sr.append(float(sg["signal_ratio"].mean()))
        out["A6"].append({"perception_noise_sd": noise, "ratio": float(np.mean(r)),
                          "signal_ratio": float(np.mean(sr))})
        print("A6", noise, np.mean(r), np.mean(sr), flush=True)
    return out


def power_table(paths: list[Path], out: Path) -> None:
    """The report's stored power table: per ablation and identity count, the share of
    "supports" at the null(s) and at the plan's effect, from calibration summaries."""
    rows = []
    for p in paths:
        rep = json.loads(p.read_text())
        if "summary" not in rep:  # `emoface power --json`: power at planted effects
            null = {"A8": 0.0}
            for r in rep["rows"]:
                rows.append({"ablation": r["ablation"], "identities": r["identities"],
                             "effect": r["effect"],
                             "scenario": "null" if r["effect"] == null.get(r["ablation"])
                             else "effect", "replicates": r["replicates"], "power": r["power"],
                             "mc_low": r["mc_low"], "mc_high": r["mc_high"],
                             "source": p.name, "bootstrap": "emoface power"})
            continue
        for r in rep["summary"]:
            scenario = ("null" if r["scenario"] == "given"
                        and r["effect"] in S.DESIGNS[r["ablation"]].nulls else r["scenario"])
            rows.append({"ablation": r["ablation"], "identities": r["identities"],
                         "effect": r["effect"], "scenario": scenario,
                         "replicates": r["replicates"], "power": r["outcome_supports"],
                         "mc_low": r["outcome_ci"][0], "mc_high": r["outcome_ci"][1],
                         "source": str(p.relative_to(ROOT)) if p.is_relative_to(ROOT)
                         else str(p), "bootstrap": rep["bootstrap"]})
    # a later file's row replaces an earlier one of the same design (a re-planted null)
    rows = list({(r["ablation"], r["identities"], r["effect"], r["scenario"]): r
                 for r in rows}.values())
    out.write_text(json.dumps({"about": "share of simulated studies that say 'supports' "
                               "(bench/verdict_calibration.py; docs/verdict-calibration.md)",
                               "effects": {a: REGISTRY[a].effect for a in REGISTRY},
                               "rows": rows}, indent=1) + "\n")
    print(f"{len(rows)} rows -> {out}")


def markdown(paths: list[Path]) -> None:
    """The docs' table rows from summary.json files (Wilson 95 % Monte Carlo intervals)."""
    def cell(r: dict, rule: str) -> str:
        if f"{rule}_supports" not in r:
            return "-"
        lo, hi = r[f"{rule}_ci"]
        return f"{r[f'{rule}_supports']:.3f} [{lo:.3f}, {hi:.3f}]"
    for p in paths:
        rep = json.loads(p.read_text())
        for r in rep["summary"]:
            print(f"| {r['ablation']} | {r['scenario']} {r['effect']:g} | {r['stimuli']:,} | "
                  f"{r['replicates']} | {cell(r, 'outcome')} | {cell(r, 'primary')} | "
                  f"{cell(r, 'signal')} | {cell(r, 'both_rules')} | "
                  f"{r.get('outcome_does_not_support', float('nan')):.3f} | "
                  f"{rep['elapsed_s']:.0f} / {rep['cpu_s']:.0f} | {p.parent.name} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="A1,A2,A3,A4,A5,A6,A7,A8")
    ap.add_argument("--effects", default="null", help="null, plan, curve or numbers")
    ap.add_argument("--identities", default="240",
                    help="identities per study, comma-separated (240 = 1,440 stimuli)")
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--first", type=int, default=1, help="first replicate (seed)")
    ap.add_argument("--bootstrap", type=int, default=None,
                    help="resamples/permutations instead of the study's (default: the study's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "bench" / "calibration")
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--knobs", nargs="+", default=None,
                    help="with --tune: only A1, at these gemma3-4b knob strings")
    ap.add_argument("--power-table", nargs="+", type=Path, default=None,
                    help="summary.json files -> --out (the report's stored power table)")
    ap.add_argument("--markdown", nargs="+", type=Path, default=None,
                    help="summary.json files -> the docs' table rows")
    args = ap.parse_args(argv)
    if args.markdown:
        markdown(args.markdown)
        return 0
    if args.power_table:
        power_table(args.power_table, args.out)
        return 0
    if args.tune:
        _descriptive_off()
        rep = tune(int(args.identities), tuple(range(1, args.replicates + 1)), args.knobs)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tune.json").write_text(json.dumps(rep, indent=1) + "\n")
        return 0
    sizes = [int(x) for x in args.identities.split(",")]
    jobs = [(aid, e, label, rep, n, args.bootstrap)
            for n in sizes for aid in args.only.split(",") for e, label in _effects(aid, args.effects)
            for rep in range(args.first, args.first + args.replicates)]
    # interleave cheap and dear jobs so both workers finish together
    jobs.sort(key=lambda j: (j[3], j[0], j[1], j[4]))
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    with ProcessPoolExecutor(args.workers, initializer=_descriptive_off) as pool:
        rows = list(pool.map(one, jobs, chunksize=1))
    elapsed = time.perf_counter() - t0
    df = pl.DataFrame(rows, infer_schema_length=None)
    args.out.mkdir(parents=True, exist_ok=True)
    df.write_csv(args.out / "replicates.csv")
    summary = summarise(df)
    report = {"command": " ".join(["bench/verdict_calibration.py", *(argv or sys.argv[1:])]),
              "bootstrap": args.bootstrap or "study (2000 / 500 secondary / 1000 permutations)",
              "workers": args.workers, "elapsed_s": round(elapsed, 1),
              "cpu_s": round(float(df["cpu_s"].sum()), 1),
              "load_before": [round(x, 2) for x in load0],
              "load_after": [round(x, 2) for x in os.getloadavg()], "summary": summary}
    (args.out / "summary.json").write_text(json.dumps(report, indent=1) + "\n")
    for r in summary:
        line = [f"{r['ablation']} {r['scenario']} effect={r['effect']:g} n_id={r['identities']}"
                f" reps={r['replicates']}"]
        for rule in RULES:
            if f"{rule}_supports" in r:
                lo, hi = r[f"{rule}_ci"]
                line.append(f"{rule} {r[f'{rule}_supports']:.3f} [{lo:.3f}, {hi:.3f}]")
        print("; ".join(line))
    print(f"{len(jobs)} replicates in {elapsed:.0f} s wall, {report['cpu_s']:.0f} s CPU -> "
          f"{args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
