"""Tiny Qwen2-VL: dynamic resolution (the image becomes a grid of 14 px patches, merged 2x2 into
image-pad tokens in the text stream) and M-RoPE (3-D positions for image tokens)."""

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

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
HIDDEN, PIXELS = 64, 56 * 56  # 56 x 56 px -> 4 x 4 patches -> 4 image tokens after the merge

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(path: Path, *, seed: int = 0, answerer: bool = True, digits: Digits = "merged") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    train_tokenizer(path, SPECIAL, digits)
    ids = token_ids(path, SPECIAL)
    vocab = vocab_size(path)
    write_json(path, "config.json", {
        "model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
        # Qwen2-VL keeps the text config at the top level
        "hidden_size": HIDDEN, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "vocab_size": vocab, "max_position_embeddings": 2048, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": True,
        "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        "vision_config": {"model_type": "qwen2_vl", "depth": 2, "embed_dim": 32,
                          "hidden_size": HIDDEN, "num_heads": 4, "patch_size": 14,
                          "spatial_patch_size": 14, "spatial_merge_size": 2,
                          "temporal_patch_size": 2, "mlp_ratio": 2, "in_channels": 3},
    })
    write_json(path, "tokenizer_config.json", {
        "tokenizer_class": "Qwen2TokenizerFast", "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "bos_token": None, "unk_token": None,
        "add_bos_token": False, "model_max_length": 2048, "padding_side": "left",
    })
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    write_json(path, "preprocessor_config.json", {
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor",
        "min_pixels": PIXELS, "max_pixels": PIXELS, "patch_size": 14, "merge_size": 2,
        "temporal_patch_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True,
    })
    write_json(path, "processor_config.json", {"processor_class": "Qwen2VLProcessor"})
    params = flat_params(instantiate(path, seed))
    save_weights(path, params, seed=seed,
                 nudge=("language_model.model.embed_tokens.weight", ids["<|im_end|>"], HIDDEN)
                 if answerer else None)
    return path
