"""mlx-vlm backend (Apple silicon, and Linux CPUs through ``mlx[cpu]``).

* One conversation = one ``PromptCacheState``: the KV cache of turn n is reused by turn n+1, so the
  image is encoded and prefilled once per conversation (``cached_tokens`` on each turn shows it).
* Conversations that share a first turn (same image, same first question) start from a copy of one
  first-turn KV state (:mod:`emoface.backends.mlx.prefix`), so with an image-major schedule the
  image is encoded and prefilled once per image and model across conditions.
* ``stream_generate`` gives the full-vocabulary log-softmax at every step; each step stores the
  top ``top_k`` (50 as in the study) and the exact log-probabilities of the digits 1-9, merging every
  vocabulary entry that decodes to that digit ("7", " 7", "▁7").
* Hidden states (A9): :mod:`emoface.backends.mlx.hidden`.
* 4-bit and FP16 are different model directories, hence different model ids; A4's self-quantized
  arm is made by :mod:`emoface.backends.mlx.quantize`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
import mlx_vlm
import numpy as np
from mlx_vlm import apply_chat_template, load, stream_generate
from mlx_vlm.generate.common import PromptCacheState

from emoface.backends.base import (
    Backend,
    GenerationOptions,
    ModelInfo,
    PermanentBackendError,
    StimulusInput,
    TokenStep,
    TurnResult,
)
from emoface.backends.mlx import quantize
from emoface.backends.mlx.prefix import FirstTurnSeed, SeedCache
from emoface.backends.mlx.quantize import weights_digest
from emoface.prompts import Turn

DIGITS = tuple(str(d) for d in range(1, 10))

# Architectures checked with the tiny-model matrix (tests/backends/test_mlx_matrix.py): three-turn
# KV reuse, digit log-probs equal to a full forward pass, identical T = 0 answers with and without
# reuse, first-turn sharing bit-identical to conversation-at-a-time.
VERIFIED = ("gemma3", "mllama", "qwen2_vl", "qwen2_5_vl", "smolvlm", "idefics3", "kimi_vl")
# Architectures that mlx-vlm 0.7.10 cannot continue from a cached prefix (model_type -> why): every
# turn of their conversations is prefilled in full, image included (correct numbers, full cost), and
# they share no first-turn state.
NO_CACHE_REUSE: dict[str, str] = {
    "mllama": "mlx-vlm slices mllama's cross-attention mask by the uncached suffix's own positions, "
              "so a turn continued from a cached prefix fails with a broadcast error",
}
# Architectures refused at load time (model_type -> the limitation): none known so far.
UNSUPPORTED: dict[str, str] = {}


class MlxBackend(Backend):
    max_concurrency = 1  # one model in one process; generation is not thread-safe

    def __init__(self, model: str, *, top_k: int = 50, share_first_turn: int = 4,
                 path: str | None = None) -> None:
        """``share_first_turn``: how many first-turn KV states to keep for reuse (0 = every
        conversation prefills its own first turn, the conversation-at-a-time path). ``path``: the
        directory to load when it is not ``model`` itself (A4's self-quantized arm)."""
        self.model_name = model
        path = path or model
        model_type = _model_type(path)
        if model_type in UNSUPPORTED:
            raise PermanentBackendError(
                f"mlx/{model}: architecture '{model_type}' is not supported: "
                f"{UNSUPPORTED[model_type]}")
        try:
            self.model, self.processor = load(path)
        except Exception as err:  # noqa: BLE001 - surfaced with the id that failed
            raise PermanentBackendError(
                f"mlx/{model}: cannot load ({type(err).__name__}: {err}); give a local model "
                "directory or a repo id already in the Hugging Face cache") from None
        self.top_k = top_k
        self.path = path
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self._digit_ids = self._find_digit_ids()
        self._info: ModelInfo | None = None
        self.model_type = str(getattr(self.model.config, "model_type", model_type))
        if self.model_type in UNSUPPORTED:
            raise PermanentBackendError(
                f"mlx/{model}: architecture '{self.model_type}' is not supported: "
                f"{UNSUPPORTED[self.model_type]}")
        self.reuse_cache = self.model_type not in NO_CACHE_REUSE
        self._seeds = SeedCache(share_first_turn if self.reuse_cache else 0)
        # work actually done, for benchmarks: prompt tokens computed, image encodings
        self.stats = {"prefill_tokens": 0, "vision_encodes": 0, "seeds_reused": 0}

    def _find_digit_ids(self) -> list[np.ndarray]:
        buckets: dict[str, list[int]] = {d: [] for d in DIGITS}
        for token, idx in self.tokenizer.get_vocab().items():
            text = self.tokenizer.convert_tokens_to_string([token]).strip()
            if text in buckets:
                buckets[text].append(idx)
        return [np.array(sorted(buckets[d]), dtype=np.int64) for d in DIGITS]

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            path = Path(self.model.config.__dict__.get("_name_or_path", "") or self.path)
            quant = getattr(self.model.config, "quantization", None)
            if isinstance(quant, dict) and quant.get("bits"):
                quantization = f"q{quant['bits']}"
            else:
                w = self.model.language_model.model.embed_tokens.weight
                quantization = str(w.dtype).replace("mlx.core.", "")
            extra = {}
            prov = path / "emoface_quantization.json"
            if path.is_dir() and prov.exists():  # A4's self-quantized arm: say from what, how
                made = json.loads(prov.read_text())
                extra["quantized_from"] = made
                quantization = (f"q{made['bits']} g{made['group_size']} self-quantized from "
                                f"{made['from_digest'][:19]}")
            self._info = ModelInfo(
                model_id=f"mlx/{self.model_name}", backend="mlx", model=self.model_name,
                digest=weights_digest(path) if path.is_dir() else f"repo:{self.model_name}",
                backend_version=f"mlx {mx.__version__}; mlx-vlm {mlx_vlm.__version__}",
                quantization=quantization, extra=extra,
            )
        return self._info

    def _step(self, token: int, logprobs: mx.array) -> TokenStep:
        lp = np.array(logprobs.astype(mx.float32), dtype=np.float64).reshape(-1)
        k = min(self.top_k, lp.size)
        top_ids = np.argpartition(-lp, k - 1)[:k]
        top_ids = top_ids[np.argsort(-lp[top_ids])]
        top = tuple((int(i), self.tokenizer.decode([int(i)]), float(lp[i])) for i in top_ids)
        digits = tuple(float(np.logaddexp.reduce(lp[ids])) if ids.size else float("nan")
                       for ids in self._digit_ids)
        return TokenStep(self.tokenizer.decode([token]), float(lp[token]), top, digits)

    def _seed(self, key: tuple[str, str], prompt: str, image: list[str]) -> tuple[PromptCacheState, int]:
        """A cache state holding all but the last token of the first-turn prompt, and how many of
        its tokens this conversation did not compute (0 when it built the state itself)."""
        seed = self._seeds.get(key)
        reused = seed is not None
        if seed is None:
            st = PromptCacheState()
            items = list(stream_generate(self.model, self.processor, prompt, image=image,
                                         max_tokens=1, temperature=0.0, prompt_cache_state=st))
            n = int(items[-1].prompt_tokens)
            self.stats["prefill_tokens"] += n - int(items[-1].cached_tokens or 0)
            self.stats["vision_encodes"] += 1
            seed = FirstTurnSeed(st.token_ids[: n - 1], st.cache)
            self._seeds.put(key, seed)
        else:
            self.stats["seeds_reused"] += 1
        return seed.state(), len(seed.token_ids) if reused else 0

    def converse(self, stimulus: StimulusInput | None, turns: Sequence[Turn],
                 options: GenerationOptions, *, json_schema: dict | None = None) -> list[TurnResult]:
        messages: list[dict] = []
        cache = PromptCacheState()
        image = [str(stimulus.image_path)] if stimulus is not None else None
        results = []
        for i, turn in enumerate(turns):
            content: list[dict] = [{"type": "text", "text": turn.text}]
            if turn.with_image and image:
                content.insert(0, {"type": "image"})
            messages.append({"role": "user", "content": content})
            prompt = apply_chat_template(self.processor, self.model.config, messages,
                                         num_images=1 if image else 0)
            not_computed = 0
            if not self.reuse_cache:
                cache = None  # a full prefill of the conversation so far (NO_CACHE_REUSE)
            elif i == 0 and image and self._seeds.size > 0:
                cache, not_computed = self._seed((stimulus.sha256 or str(stimulus.image_path),
                                                  prompt), prompt, image)
            mx.random.seed(options.seed)
            t0 = time.perf_counter()
            items = list(stream_generate(
                self.model, self.processor, prompt, image=image, max_tokens=options.max_tokens,
                temperature=options.temperature, prompt_cache_state=cache))
            text = "".join(i.text for i in items)
            steps = tuple(self._step(int(i.token), i.logprobs) for i in items
                          if i.logprobs is not None)
            last = items[-1] if items else None
            prompt_tokens = int(getattr(last, "prompt_tokens", 0) or 0)
            cached = int(getattr(last, "cached_tokens", 0) or 0)
            self.stats["prefill_tokens"] += prompt_tokens - cached
            if image and cached == 0:
                self.stats["vision_encodes"] += 1
            results.append(TurnResult(
                text=text, steps=steps, latency_s=time.perf_counter() - t0,
                prompt_tokens=prompt_tokens,
                completion_tokens=int(getattr(last, "generation_tokens", len(items)) or 0),
                # tokens this conversation did not compute: served from its own cache, or from
                # a first-turn state another conversation computed
                cached_tokens=not_computed if i == 0 else cached,
            ))
            messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
        return results

    def hidden_states(self, stimulus: StimulusInput, prompt: str) -> dict[str, np.ndarray]:
        from emoface.backends.mlx.hidden import hidden_states

        return hidden_states(self.model, self.processor, str(stimulus.image_path), prompt)

    def close(self) -> None:
        self._seeds.clear()


def _model_type(model: str) -> str | None:
    """model_type from a local directory's config.json (None for a repo id not read yet)."""
    cfg = Path(model) / "config.json"
    if cfg.exists():
        return json.loads(cfg.read_text()).get("model_type")
    return None


def build(model: str, inference, *, emotions, stimulus_set=None) -> MlxBackend:
    path = None
    sq = quantize.parse(model)
    if sq is not None:  # A4's self-quantized arm, made once under data/models/quantized/
        data_root = stimulus_set.paths.root.parents[1] if stimulus_set is not None else Path("data")
        try:
            path = str(quantize.ensure_quantized(Path(sq.base), sq.bits, sq.group_size,
                                                 data_root / "models" / "quantized"))
        except FileNotFoundError as err:
            raise PermanentBackendError(f"mlx/{model}: {err}") from None
    return MlxBackend(model, top_k=inference.mlx.top_k,
                      share_first_turn=inference.mlx.share_first_turn, path=path)
