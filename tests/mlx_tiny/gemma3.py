"""Tiny Gemma3: SigLIP vision (64 px, patch 8) -> 16 image soft tokens in the text stream."""

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


def build(path: Path, *, seed: int = 0, answerer: bool = True, digits: Digits = "merged",
          sliding_window: int = 512, image_tokens: int = MM_TOKENS) -> Path:
    """``image_tokens`` (a perfect square): 16 by default; 256 as in the real Gemma3 (patch 4)."""
    side = int(round(image_tokens**0.5))
    if side * side != image_tokens or IMAGE_SIZE % side:
        raise ValueError(f"image_tokens must be a square whose root divides {IMAGE_SIZE}")
    path.mkdir(parents=True, exist_ok=True)
    train_tokenizer(path, SPECIAL, digits, style="spm")
    ids = token_ids(path, SPECIAL)
    vocab = vocab_size(path)
    text_config = {
        "model_type": "gemma3_text", "hidden_size": HIDDEN, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": vocab, "query_pre_attn_scalar": 16,
        "sliding_window": sliding_window, "sliding_window_pattern": 2,
        "mm_tokens_per_image": image_tokens, "max_position_embeddings": 2048,
    }
    write_json(path, "config.json", {
        "model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
        "hidden_size": HIDDEN, "vocab_size": vocab, "pad_token_id": ids["<pad>"],
        "image_token_index": ids["<image_soft_token>"],
        "boi_token_index": ids["<start_of_image>"], "eoi_token_index": ids["<end_of_image>"],
        "eos_token_id": [ids["<eos>"], ids["<end_of_turn>"]], "mm_tokens_per_image": image_tokens,
        "text_config": text_config,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": HIDDEN,
                          "num_hidden_layers": 2, "intermediate_size": 128,
                          "num_attention_heads": 4, "patch_size": min(PATCH, IMAGE_SIZE // side),
                          "image_size": IMAGE_SIZE},
    })
    write_json(path, "tokenizer_config.json", {
        "tokenizer_class": "GemmaTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": False,
        "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                 "image_token": "<image_soft_token>"},
        "model_max_length": 2048, "padding_side": "left",
    })
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    write_json(path, "preprocessor_config.json", {
        "image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
        "do_resize": True, "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2,
        "do_convert_rgb": True, "do_pan_and_scan": False,
    })
    write_json(path, "processor_config.json",
               {"processor_class": "Gemma3Processor", "image_seq_length": image_tokens})
    params = flat_params(instantiate(path, seed))
    save_weights(path, params, seed=seed,
                 randomise=["multi_modal_projector.mm_input_projection_weight"],
                 nudge=("language_model.model.embed_tokens.weight", ids["<end_of_turn>"], HIDDEN)
                 if answerer else None)
    return path
