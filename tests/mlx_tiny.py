"""Build a tiny, randomly initialised Gemma3 VLM that ``mlx_vlm.load`` accepts (no downloads).

About 1 MB and 3 s: text hidden 64, 2 layers; SigLIP vision hidden 64, patch 8, 64 px images,
16 image tokens. A byte-level BPE tokenizer trained on the study's prompt vocabulary makes the digits
1-9 and the emotion words single tokens. Random weights answer garbage, so :func:`build_tiny_gemma3`
optionally nudges the output layer so that the model answers one digit (or one emotion word) and
then ends the turn, with the choice still depending on the image: enough for parsing and
dark-knowledge tests through the real mlx-vlm code path.
"""

from __future__ import annotations

import json
from pathlib import Path

from emoface.emotions import DEFAULT_EMOTIONS
from emoface.prompts import (
    AROUSAL_QUESTION,
    EMOTION_QUESTION,
    SINGLE_SHOT_QUESTION,
    TEXT_ONLY_QUESTION,
    VALENCE_QUESTION,
)

SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
           "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
IMAGE_SIZE, PATCH, MM_TOKENS, HIDDEN = 64, 8, 16, 64

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _train_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [EMOTION_QUESTION.format(emotions=", ".join(DEFAULT_EMOTIONS)), VALENCE_QUESTION,
              AROUSAL_QUESTION, SINGLE_SHOT_QUESTION, *TEXT_ONLY_QUESTION.values(),
              " ".join(DEFAULT_EMOTIONS), " ".join(e.capitalize() for e in DEFAULT_EMOTIONS),
              "The facial expression is", "1 2 3 4 5 6 7 8 9"] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(path / "tokenizer.json"))


def _write_configs(path: Path, vocab: int, ids: dict[str, int]) -> dict:
    text_config = {
        "model_type": "gemma3_text", "hidden_size": HIDDEN, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": vocab, "query_pre_attn_scalar": 16,
        "sliding_window": 512, "sliding_window_pattern": 2, "mm_tokens_per_image": MM_TOKENS,
        "max_position_embeddings": 2048,
    }
    config = {
        "model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
        "hidden_size": HIDDEN, "vocab_size": vocab, "pad_token_id": ids["<pad>"],
        "image_token_index": ids["<image_soft_token>"],
        "boi_token_index": ids["<start_of_image>"], "eoi_token_index": ids["<end_of_image>"],
        "eos_token_id": [ids["<eos>"], ids["<end_of_turn>"]], "mm_tokens_per_image": MM_TOKENS,
        "text_config": text_config,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": HIDDEN,
                          "num_hidden_layers": 2, "intermediate_size": 128,
                          "num_attention_heads": 4, "patch_size": PATCH,
                          "image_size": IMAGE_SIZE},
    }
    (path / "config.json").write_text(json.dumps(config, indent=1))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": False,
        "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                 "image_token": "<image_soft_token>"},
        "model_max_length": 2048, "padding_side": "left",
    }))
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
        "do_resize": True, "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2,
        "do_convert_rgb": True, "do_pan_and_scan": False,
    }))
    (path / "processor_config.json").write_text(json.dumps(
        {"processor_class": "Gemma3Processor", "image_seq_length": MM_TOKENS}))
    return config


def build_tiny_gemma3(path: Path, *, seed: int = 0, answerer: bool = True) -> Path:
    """Write the tiny model to ``path``. With ``answerer`` the output layer is nudged so answers are
    one digit / one emotion word followed by end-of-turn (see the module docstring)."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_vlm.models.gemma3 import Model, ModelConfig, TextConfig, VisionConfig
    from tokenizers import Tokenizer

    path.mkdir(parents=True, exist_ok=True)
    _train_tokenizer(path)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    ids = {s: tok.token_to_id(s) for s in SPECIAL}
    config = _write_configs(path, vocab, ids)

    mx.random.seed(seed)
    model_config = ModelConfig.from_dict({
        **config, "text_config": TextConfig.from_dict(config["text_config"]),
        "vision_config": VisionConfig.from_dict(config["vision_config"])})
    model = Model(model_config)
    params = dict(tree_flatten(model.parameters()))
    rng = np.random.default_rng(seed)
    proj = "multi_modal_projector.mm_input_projection_weight"
    params[proj] = mx.array(rng.normal(0, 0.5, params[proj].shape).astype(np.float32))
    if answerer:
        emb = np.array(params["language_model.model.embed_tokens.weight"])
        answer_ids = [tok.token_to_id(str(d)) for d in range(1, 10)]
        answer_ids += [tok.token_to_id(w) for w in (*DEFAULT_EMOTIONS,
                                                     *(e.capitalize() for e in DEFAULT_EMOTIONS))
                       if tok.token_to_id(w) is not None]
        # lm_head is tied to the embeddings, so one matrix serves input and output:
        # feature 1 is a large constant in every token (so every position's final hidden state
        # has h[1] > 0) and larger in answer tokens (so the output favours them); feature 2 marks
        # answer tokens, and end-of-turn reads it (so an answer is followed by end-of-turn).
        emb[:, 1] = 2.0
        emb[answer_ids, 1] = 3.0
        emb[:, 2] = 0.0
        emb[answer_ids, 2] = 2.0
        emb[ids["<end_of_turn>"], 2] = 8.0
        params["language_model.model.embed_tokens.weight"] = mx.array(emb.astype(np.float32))
    mx.save_safetensors(str(path / "model.safetensors"), params, metadata={"format": "mlx"})
    return path
