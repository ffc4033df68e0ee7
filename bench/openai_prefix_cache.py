"""A server's prefix cache under the two schedules: A3's conditions (T = 0 and every temperature x
repeat: ten conditions that share the first turn, the image and the emotion question) for N
stimuli through the OpenAI-compatible backend, conversation-at-a-time vs image-major.

The server is the local stand-in (tests/fake_openai.py) with a simulated prefix cache that works
as vLLM's automatic prefix caching: whole blocks of 16 tokens, each identified by every token up
to its end, an LRU of ``--cache-images`` first turns' worth of blocks (a GPU's KV cache holds far
fewer prompts than a 1,440-image pass: whatever a schedule does not reuse soon is evicted), 256
tokens per image. Conversation-at-a-time runs each condition over every stimulus before the next
condition; image-major (what the flow does for conditions that share a first turn) runs each
stimulus under every condition back to back.

Reports, per schedule: prompt and cached tokens over the image-bearing first turns and their
share, and whether the stored rows of both schedules are identical (they must be). The last line
is ``cached share=X`` (cached / prompt tokens of the first turns, image-major; target >= 0.8).

    python bench/openai_prefix_cache.py [--stimuli 240] [--cache-images 32] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "openai/Qwen/Qwen2.5-VL-7B-Instruct"
VOLATILE = ("latency_s", "attempts", "cached_tokens", "served_by", "model_digest",
            "backend_version")


def run_schedule(specs_for, inference_for, emotions, args, image_major: bool) -> dict:
    import polars as pl

    from emoface.backends import make_backend
    from emoface.inference.scheduler import run_image_major, run_specs
    from emoface.inference.store import PredictionStore
    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI() as server, tempfile.TemporaryDirectory() as tmp:
        # blocks of one first turn (chat template, question, image) x the images it may hold
        first_blocks = -(-(server.image_tokens + 48) // server.block_size)
        server.cache_blocks = args.cache_images * first_blocks
        backend = make_backend(MODEL, inference_for(server.base_url), emotions=emotions)
        store = PredictionStore(Path(tmp))
        specs = specs_for(backend, store)
        if image_major:
            calls = run_image_major(backend, specs, store, emotions)
        else:  # one condition after the other, batch by batch
            calls = sum(run_specs(backend, [s for s in specs if s.folder == folder], store,
                                  emotions) for folder in dict.fromkeys(s.folder for s in specs))
        rows = pl.concat([pl.read_parquet(store.batch_file(s.folder, s.index, "parquet"))
                          for s in specs]).drop(*VOLATILE)
        first = [u for u in server.usage_log if u["image_turn"]]
        backend.close()
    prompt = sum(u["prompt_tokens"] for u in first)
    cached = sum(u["cached_tokens"] for u in first)
    return {"calls": calls, "first_turns": len(first), "first_turn_prompt_tokens": prompt,
            "first_turn_cached_tokens": cached, "cached_share": round(cached / prompt, 3),
            "cache_blocks": args.cache_images * first_blocks, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stimuli", type=int, default=240)
    ap.add_argument("--cache-images", type=int, default=32,
                    help="the server's prefix cache holds this many first turns")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from emoface.ablations import work_for
    from emoface.config import InferenceParams, OpenAIParams, Params, StimuliParams
    from emoface.inference.engine import plan_condition
    from emoface.paths import StimulusSetPaths
    from emoface.stimuli.generate import generate_stimulus_set
    from emoface.stimuli.store import load_stimulus_set

    params = Params(stimuli=StimuliParams(identities_per_cell=-(-args.stimuli // 24)))
    batch = min(60, args.stimuli)
    conditions = list(dict.fromkeys(i.condition.work() for i in work_for("A3", params, [MODEL])
                                    if i.model_id == MODEL))
    emotions = params.study.emotions

    def inference_for(base_url: str) -> InferenceParams:
        return InferenceParams(batch_size=batch, openai=OpenAIParams(
            base_url=base_url, concurrency=args.concurrency, retries=2, backoff_s=0.05))

    with tempfile.TemporaryDirectory() as tmp:
        paths = StimulusSetPaths(Path(tmp) / "stimuli" / "bench")
        generate_stimulus_set(params.study, params.stimuli, paths)
        ss = load_stimulus_set(paths, params.study)
        ss = dataclasses.replace(ss, manifest=ss.manifest.head(args.stimuli))

        def specs_for(backend, store):
            inf = inference_for("http://unused")
            return [s for c in conditions
                    for s in plan_condition(backend, ss, c, c.options(inf), store,
                                            batch_size=batch)]

        at_a_time = run_schedule(specs_for, inference_for, emotions, args, image_major=False)
        image_major = run_schedule(specs_for, inference_for, emotions, args, image_major=True)
    identical = at_a_time.pop("rows").equals(image_major.pop("rows"))
    report = {"stimuli": args.stimuli, "conditions": [c.condition_id for c in conditions],
              "cache_images": args.cache_images, "conversation_at_a_time": at_a_time,
              "image_major": image_major, "rows_identical": identical}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.stimuli} stimuli x {len(conditions)} conditions (A3), prefix cache of "
              f"{args.cache_images} first turns ({image_major['cache_blocks']} blocks of 16)")
        for name, r in (("conversation-at-a-time", at_a_time), ("image-major", image_major)):
            print(f"  {name:24s} first turns {r['first_turns']:5d}  prompt tokens "
                  f"{r['first_turn_prompt_tokens']:8d}  cached {r['first_turn_cached_tokens']:8d}"
                  f"  share {r['cached_share']:.3f}")
        print(f"  rows identical: {identical}")
    print(f"cached share={image_major['cached_share']:.3f}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
