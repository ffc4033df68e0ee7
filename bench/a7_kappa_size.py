"""Size of A7's test of kappa(AI) - kappa(real) under the null, by simulation.

    .venv/bin/python bench/a7_kappa_size.py --replicates 500 --out data/bench/a7_size

Each replicate draws two face sets whose labels come from the same process (so the kappas are
equal in expectation), with identity-level heterogeneity: an identity's images are labelled
correctly with probability logistic(logit(0.7) + u), u ~ N(0, sd = 1), a wrong label uniform over
the other five emotions. Scenarios: ``NxM`` = N identities x 6 images in both sets (clustered,
exchangeable identities), and ``N+singletons`` = N identities x 6 images against 6N one-image
identities with the same per-image accuracy distribution (not exchangeable: as with a real set of
unrelated photographs). Reported: the share of replicates with p < alpha for

* ``permutation``: the rule A7 uses (``a7_real_faces.kappa_difference_test``: studentized
  permutation of set labels by identity);
* ``bootstrap``: the rule A7 used before (independent identity bootstrap of each set, BC interval
  and its p, ``stats.bc_interval``).

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emoface.ablations.a7_real_faces import kappa_difference_test  # noqa: E402
from emoface.analysis import metrics as M  # noqa: E402
from emoface.analysis.stats import bc_interval  # noqa: E402

K = 6


def labels(rng: np.random.Generator, n_ids: int, per_id: int, sd: float = 1.0):
    """(truth, pred, identity) of ``n_ids`` identities with ``per_id`` images each."""
    truth = np.tile(np.arange(K), n_ids) if per_id == K else rng.integers(0, K, n_ids * per_id)
    u = np.repeat(rng.normal(0, sd, n_ids), per_id)
    ok = rng.random(truth.size) < 1 / (1 + np.exp(-(np.log(0.7 / 0.3) + u)))
    pred = np.where(ok, truth, (truth + rng.integers(1, K, truth.size)) % K)
    return truth, pred, [f"i{i}" for i in np.repeat(np.arange(n_ids), per_id)]


def one(args: tuple) -> dict:
    scenario, rep, n_perm, n_boot, alpha = args
    rng = np.random.default_rng(rep)
    n = int(scenario.split("x")[0].split("+")[0])
    a = labels(rng, n, K)
    b = labels(rng, n * K, 1) if scenario.endswith("singletons") else labels(rng, n, K)
    perm = kappa_difference_test([a, b], K, n_perm, rep, alpha)
    kap = []
    for j, (t, p, ids) in enumerate((a, b)):
        w = M.cluster_weights(ids, n_boot, 1000 * j + rep)
        kap.append((M.w_kappa(t, p, K, np.ones((1, t.size)))[0], M.w_kappa(t, p, K, w)))
    boot = bc_interval(kap[0][1] - kap[1][1], kap[0][0] - kap[1][0], alpha)
    return {"scenario": scenario, "replicate": rep, "p_permutation": perm["p"],
            "p_bootstrap": boot.p}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicates", type=int, default=500)
    ap.add_argument("--scenarios", default="20x6,80x6,20+singletons")
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "bench" / "a7_size")
    args = ap.parse_args(argv)
    jobs = [(sc, rep, args.permutations, args.bootstrap, args.alpha)
            for sc in args.scenarios.split(",") for rep in range(1, args.replicates + 1)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one, jobs, chunksize=8))
    elapsed = time.perf_counter() - t0
    summary = []
    for sc in args.scenarios.split(","):
        r = [x for x in rows if x["scenario"] == sc]
        for rule in ("permutation", "bootstrap"):
            k = sum(x[f"p_{rule}"] < args.alpha for x in r)
            lo, hi = _wilson(k, len(r))
            summary.append({"scenario": sc, "rule": rule, "replicates": len(r),
                            "rejection_rate": k / len(r), "mc_low": lo, "mc_high": hi})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(
        {"command": " ".join(["bench/a7_kappa_size.py", *(argv or sys.argv[1:])]),
         "elapsed_s": round(elapsed, 1), "summary": summary}, indent=1) + "\n")
    for s in summary:
        print(f"{s['scenario']:>16} {s['rule']:>12}: {s['rejection_rate']:.3f} "
              f"[{s['mc_low']:.3f}, {s['mc_high']:.3f}] ({s['replicates']} replicates)")
    print(f"{len(jobs)} replicates in {elapsed:.0f} s -> {args.out}")
    return 0


def _wilson(k: int, n: int) -> tuple[float, float]:
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return float(lo), float(hi)


if __name__ == "__main__":
    raise SystemExit(main())
