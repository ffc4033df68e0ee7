"""Tiny SmolVLM2 (Idefics3 family): SigLIP vision on 56 px tiles, image splitting (the image is
cut into tiles plus a global view, each tile's 16 patches pixel-shuffled into 4 image tokens)."""

from __future__ import annotations

from pathlib import Path

from tests.mlx_tiny.common import (
    Digits,
    flat_params,
    instantiate,
    save_weights,
    token_ids,
    train_tokenizer,
    vocab_size,
    write_json,
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
           "<image>", "<global-img>", "<row_1_col_1>", "<row_1_col_2>", "<row_2_col_1>",
           "<row_2_col_2>"]
TILE, PATCH, HIDDEN, SCALE = 56, 14, 64, 2
SEQ_LEN = (TILE // PATCH) ** 2 // SCALE**2  # image tokens per tile

CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] | trim }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build(path: Path, *, seed: int = 0, answerer: bool = True, digits: Digits = "merged") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    train_tokenizer(path, SPECIAL, digits)
    ids = token_ids(path, SPECIAL)
    vocab = vocab_size(path)
    write_json(path, "config.json", {
        "model_type": "smolvlm", "architectures": ["SmolVLMForConditionalGeneration"],
        "image_token_id": ids["<image>"], "vocab_size": vocab, "scale_factor": SCALE,
        "eos_token_id": [ids["<end_of_utterance>"], ids["<|endoftext|>"]],
        "text_config": {"model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": 128,
                        "num_attention_heads": 4, "num_key_value_heads": 2,
                        "num_hidden_layers": 2, "vocab_size": vocab, "rms_norm_eps": 1e-5,
                        "rope_theta": 100000.0, "max_position_embeddings": 2048,
                        "tie_word_embeddings": False},
        "vision_config": {"model_type": "smolvlm_vision", "hidden_size": 32,
                          "num_attention_heads": 4, "num_hidden_layers": 2,
                          "intermediate_size": 64, "patch_size": PATCH, "image_size": TILE},
    })
    write_json(path, "tokenizer_config.json", {
        "tokenizer_class": "GPT2TokenizerFast", "bos_token": "<|im_start|>",
        "eos_token": "<end_of_utterance>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "add_bos_token": False, "model_max_length": 2048,
        "extra_special_tokens": {"fake_image_token": "<fake_token_around_image>",
                                 "image_token": "<image>",
                                 "end_of_utterance_token": "<end_of_utterance>",
                                 "global_image_token": "<global-img>"},
    })
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    write_json(path, "preprocessor_config.json", {
        "image_processor_type": "SmolVLMImageProcessor", "processor_class": "SmolVLMProcessor",
        "do_resize": True, "size": {"longest_edge": 2 * TILE},
        "max_image_size": {"longest_edge": TILE}, "do_image_splitting": True,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 1,
        "do_convert_rgb": True, "do_pad": True,
    })
    write_json(path, "processor_config.json",
               {"processor_class": "SmolVLMProcessor", "image_seq_len": SEQ_LEN})
    params = flat_params(instantiate(path, seed))
    emb = next(k for k in params if k.endswith("embed_tokens.weight"))
    save_weights(path, params, seed=seed,
                 nudge=(emb, ids["<end_of_utterance>"], HIDDEN) if answerer else None)
    return path
