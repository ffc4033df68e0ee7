"""mlx-vlm backend (Apple silicon, and Linux CPUs through ``mlx[cpu]``).

* One conversation = one ``PromptCacheState``: the KV cache of turn n is reused by turn n+1, so the
  image is encoded and prefilled once per conversation (``cached_tokens`` on each turn shows it).
* ``stream_generate`` gives the full-vocabulary log-softmax at every step; each step stores the
  top ``top_k`` (50 as in the study) and the exact log-probabilities of the digits 1-9, merging every
  vocabulary entry that decodes to that digit ("7", " 7", "▁7").
* Hidden states (A9): mlx-vlm does not return them, so the decoder layers are wrapped to record
  their outputs during one forward pass over the first-turn prompt with the image; per layer, the
  mean over the image-token positions and the last prompt token are returned.
* 4-bit and FP16 are different model directories, hence different model ids.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
import mlx_vlm
import numpy as np
from mlx_vlm import apply_chat_template, load, prepare_inputs, stream_generate
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
from emoface.prompts import Turn

DIGITS = tuple(str(d) for d in range(1, 10))


def _weights_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + [path / "config.json"]:
        if f.exists():
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
    return f"sha256:{h.hexdigest()}"


class MlxBackend(Backend):
    max_concurrency = 1  # one model in one process; generation is not thread-safe

    def __init__(self, model: str, *, top_k: int = 50) -> None:
        self.model_name = model
        try:
            self.model, self.processor = load(model)
        except Exception as err:  # noqa: BLE001 - surfaced with the id that failed
            raise PermanentBackendError(
                f"mlx/{model}: cannot load ({type(err).__name__}: {err}); give a local model "
                "directory or a repo id already in the Hugging Face cache") from None
        self.top_k = top_k
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self._digit_ids = self._find_digit_ids()
        self._info: ModelInfo | None = None

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
            path = Path(self.model.config.__dict__.get("_name_or_path", "") or self.model_name)
            quant = getattr(self.model.config, "quantization", None)
            if isinstance(quant, dict) and quant.get("bits"):
                quantization = f"q{quant['bits']}"
            else:
                w = self.model.language_model.model.embed_tokens.weight
                quantization = str(w.dtype).replace("mlx.core.", "")
            self._info = ModelInfo(
                model_id=f"mlx/{self.model_name}", backend="mlx", model=self.model_name,
                digest=_weights_digest(path) if path.is_dir() else f"repo:{self.model_name}",
                backend_version=f"mlx {mx.__version__}; mlx-vlm {mlx_vlm.__version__}",
                quantization=quantization,
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

    def converse(self, stimulus: StimulusInput | None, turns: Sequence[Turn],
                 options: GenerationOptions, *, json_schema: dict | None = None) -> list[TurnResult]:
        messages: list[dict] = []
        cache = PromptCacheState()
        image = [str(stimulus.image_path)] if stimulus is not None else None
        results = []
        for turn in turns:
            content: list[dict] = [{"type": "text", "text": turn.text}]
            if turn.with_image and image:
                content.insert(0, {"type": "image"})
            messages.append({"role": "user", "content": content})
            prompt = apply_chat_template(self.processor, self.model.config, messages,
                                         num_images=1 if image else 0)
            mx.random.seed(options.seed)
            t0 = time.perf_counter()
            items = list(stream_generate(
                self.model, self.processor, prompt, image=image, max_tokens=options.max_tokens,
                temperature=options.temperature, prompt_cache_state=cache))
            text = "".join(i.text for i in items)
            steps = tuple(self._step(int(i.token), i.logprobs) for i in items
                          if i.logprobs is not None)
            last = items[-1] if items else None
            results.append(TurnResult(
                text=text, steps=steps, latency_s=time.perf_counter() - t0,
                prompt_tokens=int(getattr(last, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(last, "generation_tokens", len(items)) or 0),
                cached_tokens=int(getattr(last, "cached_tokens", 0) or 0),
            ))
            messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
        return results

    def hidden_states(self, stimulus: StimulusInput, prompt: str) -> dict[str, np.ndarray]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = apply_chat_template(self.processor, self.model.config, messages, num_images=1)
        inputs = prepare_inputs(self.processor, images=[str(stimulus.image_path)], prompts=text,
                                image_token_index=self.model.config.image_token_index)
        ids, pixels, mask = inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"]
        emb = self.model.get_input_embeddings(ids, pixels, mask=mask).inputs_embeds
        layers = self.model.language_model.model.layers
        recorded: list[mx.array] = []
        originals = list(layers)

        class Recorder:
            def __init__(self, inner):
                self.inner = inner

            def __call__(self, *args, **kwargs):
                out = self.inner(*args, **kwargs)
                recorded.append(out[0] if isinstance(out, tuple) else out)
                return out

            def __getattr__(self, name):
                return getattr(self.inner, name)

        try:
            for i, layer in enumerate(originals):
                layers[i] = Recorder(layer)
            mx.eval(self.model.language_model(ids, inputs_embeds=emb))
        finally:
            for i, layer in enumerate(originals):
                layers[i] = layer
        image_pos = np.where(np.array(ids[0]) == self.model.config.image_token_index)[0]
        pool, last = [], []
        for h in recorded:
            arr = np.array(h[0].astype(mx.float32))
            pool.append(arr[image_pos].mean(axis=0))
            last.append(arr[-1])
        return {"image_pool": np.stack(pool), "last_token": np.stack(last)}


def build(model: str, inference, *, emotions, stimulus_set=None) -> MlxBackend:
    return MlxBackend(model, top_k=inference.mlx.top_k)
