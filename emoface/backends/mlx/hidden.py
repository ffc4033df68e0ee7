"""Hidden states for A9: per decoder layer, a pooled image representation and the last prompt token.

mlx-vlm does not return hidden states, so the first-turn prompt (image + question) goes through the
same steps as generation's prefill (``get_input_embeddings`` with the image, then the language model
over the whole prompt with a fresh cache) while each decoder layer is wrapped to record its output.

Image pooling, per architecture:

* image tokens in the text stream (Gemma3 soft tokens, Qwen2-VL image pads, SmolVLM/Idefics3
  ``<image>`` tokens of every tile, Kimi-VL media pads): the mean over those positions;
* mllama (Llama-3.2-Vision) has one ``<|image|>`` token and feeds the image only through its
  cross-attention layers: the mean over the text positions that cross-attend to the image, i.e.
  from the ``<|image|>`` token to the end of the prompt (earlier positions are masked from it).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx_vlm import apply_chat_template
from mlx_vlm.generate.dispatch import _prepare_generation_inputs
from mlx_vlm.models.cache import make_prompt_cache


def image_token_id(config) -> int:
    for name in ("image_token_index", "image_token_id", "media_placeholder_token_id"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"{config.model_type}: no image token id in the config")


def pooled_positions(model_type: str, ids: np.ndarray, image_id: int) -> np.ndarray:
    """Positions the image representation is pooled over (see the module docstring)."""
    where = np.where(ids == image_id)[0]
    if model_type == "mllama":
        return np.arange(int(where[0]), ids.size) if where.size else where
    return where


def decoder_layers(model) -> list:
    lm = model.language_model
    inner = getattr(lm, "model", lm)
    return inner.layers


def hidden_states(model, processor, image: str, prompt: str) -> dict[str, np.ndarray]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = apply_chat_template(processor, model.config, messages, num_images=1)
    kwargs: dict = {}
    ids, pixels, mask, _ = _prepare_generation_inputs(model, processor, text, [image], None, None,
                                                      kwargs)
    out = model.get_input_embeddings(ids, pixels, mask=mask, **kwargs)
    kwargs.update({k: v for k, v in out.to_dict().items()
                   if k != "inputs_embeds" and v is not None})
    layers = decoder_layers(model)
    recorded: list[mx.array] = []
    originals = list(layers)

    class Recorder:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, *args, **kw):
            res = self.inner(*args, **kw)
            recorded.append(res[0] if isinstance(res, tuple) else res)
            return res

        def __getattr__(self, name):
            return getattr(self.inner, name)

    try:
        for i, layer in enumerate(originals):
            layers[i] = Recorder(layer)
        cache = make_prompt_cache(model.language_model)
        res = model.language_model(ids, inputs_embeds=out.inputs_embeds, cache=cache, **kwargs)
        mx.eval(res.logits if hasattr(res, "logits") else res, *recorded)
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer
    flat = np.array(ids[0])
    pos = pooled_positions(model.config.model_type, flat, image_token_id(model.config))
    if pos.size == 0:
        raise ValueError(f"{model.config.model_type}: no image positions in the prompt")
    pool, last = [], []
    for h in recorded:
        arr = np.array(h[0].astype(mx.float32))
        pool.append(arr[pos].mean(axis=0))
        last.append(arr[-1])
    return {"image_pool": np.stack(pool), "last_token": np.stack(last)}
