"""Tiny mllama (Llama-3.2-Vision): tiled vision encoder whose features reach the text model only
through cross-attention layers; the text stream holds one ``<|image|>`` token and no image
features."""

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

SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|eot_id|>", "<|image|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]
TILE, PATCH, HIDDEN, VISION_HIDDEN = 28, 14, 64, 32

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|image|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def build(path: Path, *, seed: int = 0, answerer: bool = True, digits: Digits = "merged") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    train_tokenizer(path, SPECIAL, digits)
    ids = token_ids(path, SPECIAL)
    vocab = vocab_size(path)
    layers = [1, 3]
    write_json(path, "config.json", {
        "model_type": "mllama", "architectures": ["MllamaForConditionalGeneration"],
        "image_token_index": ids["<|image|>"], "vocab_size": vocab,
        "eos_token_id": [ids["<|eot_id|>"], ids["<|end_of_text|>"]],
        "text_config": {
            "model_type": "mllama", "vocab_size": vocab, "hidden_size": HIDDEN,
            "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "cross_attention_layers": [1], "rope_theta": 500000.0,
            "max_position_embeddings": 2048, "tie_word_embeddings": False,
        },
        "vision_config": {
            "image_size": TILE, "patch_size": PATCH, "hidden_size": VISION_HIDDEN,
            "intermediate_size": 64, "num_hidden_layers": 4, "num_global_layers": 2,
            "num_attention_heads": 4, "max_num_tiles": 4,
            "intermediate_layers_indices": layers,
            "vision_output_dim": VISION_HIDDEN * (len(layers) + 1),
        },
    })
    write_json(path, "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>",
        "add_bos_token": False, "model_max_length": 2048, "padding_side": "left",
    })
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    write_json(path, "preprocessor_config.json", {
        "image_processor_type": "MllamaImageProcessor", "processor_class": "MllamaProcessor",
        "do_resize": True, "size": {"height": TILE, "width": TILE}, "max_image_tiles": 4,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2,
        "do_convert_rgb": True, "do_pad": True,
    })
    write_json(path, "processor_config.json", {"processor_class": "MllamaProcessor"})
    params = flat_params(instantiate(path, seed))
    # the cross-attention gates start at zero (image ignored): open them
    gates = [k for k in params if k.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate"))]
    save_weights(path, params, seed=seed, randomise=gates,
                 nudge=("language_model.model.embed_tokens.weight", ids["<|eot_id|>"], HIDDEN)
                 if answerer else None)
    return path
