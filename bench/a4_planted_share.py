"""A4: which share of within-category variance does each collapse value of the simulated rater
plant? The estimand of A4 (1 - WCV(4-bit) / WCV(FP16), arousal, intended emotion, same images)
measured by A4's own analysis on simulated studies of the calibration's design
(``emoface.analysis.simulate.DESIGNS["A4"]``: both arms with independent rating noise), to set the
"effect" scenario against the plan's 20-30 %.

    python bench/a4_planted_share.py [--collapse 0,0.5,1,2,3,4,6] [--seeds 4] [--identities 240]

Prints, per collapse value, the mean estimate over the studies and its standard error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collapse", default="0,0.5,1,2,3,4,6")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--identities", type=int, default=240)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import polars as pl

    from emoface.ablations import run_analysis
    from emoface.analysis.simulate import context
    from emoface.config import AnalysisParams

    # the estimate does not depend on the resamples; the fewest allowed keep this quick
    quick = AnalysisParams(bootstrap=100, permutations=99, secondary_bootstrap=100)
    rows = []
    for c in (float(x) for x in args.collapse.split(",")):
        vals = []
        for seed in range(1, args.seeds + 1):
            res = run_analysis("A4", context("A4", c, seed, args.identities, quick))
            main_ = res.tables["main"].filter((pl.col("field") == "arousal")
                                              & (pl.col("grouping") == "intended"))
            vals.append(float(main_["restored"][0]))
        se = float(np.std(vals, ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else float("nan")
        rows.append({"collapse": c, "share": float(np.mean(vals)), "se": se, "studies": vals})
        if not args.json:
            print(f"collapse {c:g}: planted share {100 * rows[-1]['share']:.1f} % "
                  f"(SE {100 * se:.1f}, {len(vals)} studies of {args.identities * 6} stimuli)",
                  flush=True)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
