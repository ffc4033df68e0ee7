"""First-turn prefix reuse on the mlx backend: A3's conditions (every temperature x repeat, and
T = 0) for N stimuli, conversation-at-a-time vs image-major with a shared first-turn KV state.

Runs through the real mlx-vlm code on tiny random models (tests/mlx_tiny): a Gemma3 with
Gemma-like token counts (256 image tokens per image) and, with ``--mllama``, an mllama (which
mlx-vlm cannot continue from a cached prefix: it prefills every turn in full, so its ratio stays
near 1). Reports, per model and path: prompt tokens computed (prefill), vision-encoder calls
(counted on the encoder module itself), wall time; the last line is
``prefill ratio=<image-major / conversation-at-a-time>`` for the Gemma3. Both paths' stored rows
are compared and must be identical.

    python bench/mlx_prefix_reuse.py [--stimuli 60] [--max-tokens 8] [--mllama] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class EncoderCounter:
    """Counts calls of a vision encoder class (patched on the class, restored on exit)."""

    def __init__(self, cls) -> None:
        self.cls, self.calls, self._orig = cls, 0, cls.__call__

    def __enter__(self):
        orig = self._orig

        def counted(module, *args, **kwargs):
            self.calls += 1
            return orig(module, *args, **kwargs)

        self.cls.__call__ = counted
        return self

    def __exit__(self, *exc) -> None:
        self.cls.__call__ = self._orig


def run_path(model_dir: Path, share: int, specs_for, emotions, image_major: bool) -> dict:
    import polars as pl

    from emoface.backends.mlx import MlxBackend
    from emoface.inference.scheduler import run_image_major, run_specs
    from emoface.inference.store import PredictionStore

    backend = MlxBackend(str(model_dir), share_first_turn=share)
    with tempfile.TemporaryDirectory() as tmp:
        store = PredictionStore(Path(tmp))
        specs = specs_for(backend, store)
        with EncoderCounter(type(backend.model.vision_tower)) as enc:
            t0 = time.perf_counter()
            if image_major:
                calls = run_image_major(backend, specs, store, emotions)
            else:  # the existing path: one condition after the other, batch by batch
                calls = 0
                for folder in dict.fromkeys(s.folder for s in specs):
                    calls += run_specs(backend, [s for s in specs if s.folder == folder], store,
                                       emotions)
            wall = time.perf_counter() - t0
        rows = pl.concat([pl.read_parquet(store.batch_file(s.folder, s.index, "parquet"))
                          for s in specs]).drop("latency_s", "cached_tokens")
    return {"calls": calls, "prefill_tokens": backend.stats["prefill_tokens"],
            "vision_encoder_calls": enc.calls, "wall_s": round(wall, 2), "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stimuli", type=int, default=60)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--mllama", action="store_true", help="also run the tiny mllama")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from emoface.ablations import work_for
    from emoface.config import InferenceParams, Params, StimuliParams
    from emoface.inference.engine import plan_condition
    from emoface.paths import StimulusSetPaths
    from emoface.stimuli.generate import generate_stimulus_set
    from emoface.stimuli.store import load_stimulus_set
    from tests.mlx_tiny import build_tiny

    params = Params(stimuli=StimuliParams(identities_per_cell=-(-args.stimuli // 24)))
    inference = InferenceParams(max_tokens=args.max_tokens, batch_size=args.stimuli)
    conditions = list(dict.fromkeys(i.condition.work() for i in work_for("A3", params, ["m"])
                                    if i.model_id == "m"))
    emotions = params.study.emotions
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = StimulusSetPaths(root / "stimuli" / "bench")
        generate_stimulus_set(params.study, params.stimuli, paths)
        ss = load_stimulus_set(paths, params.study)
        ss = dataclasses.replace(ss, manifest=ss.manifest.head(args.stimuli))

        def specs_for(backend, store):
            return [s for c in conditions
                    for s in plan_condition(backend, ss, c, c.options(inference), store,
                                            batch_size=args.stimuli)]

        models = {"gemma3": build_tiny("gemma3", root / "gemma3", image_tokens=256)}
        if args.mllama:
            models["mllama"] = build_tiny("mllama", root / "mllama")
        report = {"stimuli": args.stimuli, "conditions": [c.condition_id for c in conditions],
                  "max_tokens": args.max_tokens, "models": {}}
        for name, model_dir in models.items():
            single = run_path(model_dir, 0, specs_for, emotions, image_major=False)
            shared = run_path(model_dir, 4, specs_for, emotions, image_major=True)
            identical = single.pop("rows").equals(shared.pop("rows"))
            report["models"][name] = {
                "conversation_at_a_time": single, "image_major": shared,
                "rows_identical": identical,
                "prefill_ratio": round(shared["prefill_tokens"] / single["prefill_tokens"], 4),
                "vision_calls_per_image": shared["vision_encoder_calls"] / args.stimuli,
                "wall_ratio": round(shared["wall_s"] / single["wall_s"], 3),
            }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"A3 conditions: {len(conditions)} ({', '.join(report['conditions'])}); "
              f"{args.stimuli} stimuli; max_tokens {args.max_tokens}")
        for name, r in report["models"].items():
            for path in ("conversation_at_a_time", "image_major"):
                p = r[path]
                print(f"{name:7s} {path:23s} prefill tokens {p['prefill_tokens']:9d}  "
                      f"vision-encoder calls {p['vision_encoder_calls']:5d}  wall {p['wall_s']:7.1f} s")
            print(f"{name:7s} rows identical: {r['rows_identical']}; vision-encoder calls per image "
                  f"(image-major): {r['vision_calls_per_image']:.2f}; wall ratio {r['wall_ratio']}; "
                  f"prefill ratio {r['prefill_ratio']}")
    g = report["models"]["gemma3"]
    print(f"prefill ratio={g['prefill_ratio']}")
    return 0 if all(r["rows_identical"] for r in report["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
