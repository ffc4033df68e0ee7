"""Shared pieces of the tiny mlx-vlm model builders: tokenizer, random weights, the answerer nudge.

Every builder writes a directory that ``mlx_vlm.load`` accepts: ``config.json`` in the
architecture's real config shape (tiny sizes), ``model.safetensors`` (the parameters of
mlx-vlm's own ``Model`` for that config, randomly initialised), a BPE tokenizer trained on the
study's prompt vocabulary, the chat template and the processor configs.

Two tokenizer variants (``digits``):

* ``"merged"``: the digits 1-9 are single tokens and no space-prefixed digit exists;
* ``"spaced"``: the corpus also has " 1" .. " 9", so the BPE learns space-prefixed digit tokens
  ("Ġ7", or "▁7" for Gemma) besides "7": a rating can be generated as either, and the backend must
  merge both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from emoface.emotions import DEFAULT_EMOTIONS
from emoface.prompts import (
    AROUSAL_QUESTION,
    EMOTION_QUESTION,
    SINGLE_SHOT_QUESTION,
    TEXT_ONLY_QUESTION,
    VALENCE_QUESTION,
)

Digits = Literal["merged", "spaced"]


def prompt_corpus(digits: Digits) -> list[str]:
    corpus = [EMOTION_QUESTION.format(emotions=", ".join(DEFAULT_EMOTIONS)), VALENCE_QUESTION,
              AROUSAL_QUESTION, SINGLE_SHOT_QUESTION, *TEXT_ONLY_QUESTION.values(),
              " ".join(DEFAULT_EMOTIONS), " ".join(e.capitalize() for e in DEFAULT_EMOTIONS),
              "The facial expression is", "User Assistant user assistant system model image"]
    if digits == "spaced":  # frequent enough that every " d" becomes one token
        corpus += [" ".join(str(d) for d in range(1, 10))] * 4
    return corpus * 20


def train_tokenizer(path: Path, special: Sequence[str], digits: Digits,
                    style: Literal["bytelevel", "spm"] = "bytelevel") -> None:
    """A BPE on the prompt vocabulary; ``special`` are added as special tokens first. ``bytelevel``
    (GPT-2/Llama-3/Qwen style, space = "Ġ") or ``spm`` (Gemma style: space = "▁", byte fallback,
    the pipeline transformers' GemmaTokenizer rebuilds)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if style == "spm":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse()])
        alphabet = [chr(c) for c in range(32, 127)] + ["▁", "\n"]
    else:
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=list(special),
                                  initial_alphabet=alphabet)
    tok.train_from_iterator(prompt_corpus(digits), trainer)
    tok.save(str(path / "tokenizer.json"))


def token_ids(path: Path, names: Sequence[str]) -> dict[str, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    out = {n: tok.token_to_id(n) for n in names}
    missing = [n for n, i in out.items() if i is None]
    if missing:
        raise ValueError(f"tiny tokenizer lacks {missing}")
    return out


def vocab_size(path: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab_size()


def answer_token_ids(path: Path) -> list[int]:
    """Ids of the digits (both variants) and the emotion words that are single tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    words = [*(str(d) for d in range(1, 10)), *(f"{sp}{d}" for d in range(1, 10) for sp in "Ġ▁"),
             *DEFAULT_EMOTIONS, *(e.capitalize() for e in DEFAULT_EMOTIONS)]
    return [i for w in words if (i := tok.token_to_id(w)) is not None]


def write_json(path: Path, name: str, obj: dict) -> None:
    (path / name).write_text(json.dumps(obj, indent=1))


def instantiate(path: Path, seed: int):
    """mlx-vlm's own ``Model`` for ``path/config.json``, built the way ``mlx_vlm.load`` builds it."""
    import mlx.core as mx
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    config = json.loads((path / "config.json").read_text())
    model_class, _ = get_model_and_args(config=config)
    config.setdefault("text_config", {})
    config.setdefault("vision_config", {})
    config.setdefault("audio_config", {})
    model_config = model_class.ModelConfig.from_dict(config)
    model_config = update_module_configs(model_config, model_class, config,
                                         ["text", "vision", "perceiver", "projector", "audio"])
    mx.random.seed(seed)
    return model_class.Model(model_config)


def save_weights(path: Path, params: dict, *, seed: int, randomise: Sequence[str] = (),
                 nudge: tuple[str, int, int] | None = None) -> None:
    """Save ``params`` after re-drawing the named ones (projectors initialised to ones/zeros) and,
    with ``nudge = (embedding key, end-of-turn id, hidden size)``, the answerer edit: the tied or
    untied output layer favours answer tokens and makes end-of-turn follow an answer."""
    import mlx.core as mx
    import numpy as np

    rng = np.random.default_rng(seed)
    for key in randomise:
        shape = params[key].shape
        params[key] = mx.array(rng.normal(0, 0.5, shape).astype(np.float32))
    if nudge is not None:
        key, eot, _ = nudge
        answers = answer_token_ids(path)
        for k in [key, *(k for k in params if k.endswith("lm_head.weight"))]:
            emb = np.array(params[k].astype(mx.float32))
            # feature 1: a large constant in every token and larger in answer tokens (the output
            # favours them); feature 2 marks answer tokens and end-of-turn reads it
            emb[:, 1] = 2.0
            emb[answers, 1] = 3.0
            emb[:, 2] = 0.0
            emb[answers, 2] = 2.0
            emb[eot, 2] = 8.0
            params[k] = mx.array(emb.astype(np.float32))
    mx.save_safetensors(str(path / "model.safetensors"), params, metadata={"format": "mlx"})


def flat_params(model) -> dict:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(model.parameters()))
