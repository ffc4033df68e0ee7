"""Tiny Kimi-VL: MoonViT vision (native resolution, 2-D RoPE, 2x2 patch merge) into a
DeepSeek-V3-style text model (multi-head latent attention, mixture of experts)."""

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

SPECIAL = ["[BOS]", "[EOS]", "[PAD]", "<|im_user|>", "<|im_assistant|>", "<|im_system|>",
           "<|im_middle|>", "<|im_end|>", "<|media_start|>", "<|media_content|>",
           "<|media_end|>", "<|media_pad|>"]
HIDDEN = 64

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}<|im_assistant|>assistant<|im_middle|>"
    "{% else %}<|im_user|>{{ message['role'] }}<|im_middle|>{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|media_start|>image<|media_content|><|media_pad|>"
    "<|media_end|>{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_assistant|>assistant<|im_middle|>{% endif %}"
)


def build(path: Path, *, seed: int = 0, answerer: bool = True, digits: Digits = "merged") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    train_tokenizer(path, SPECIAL, digits)
    ids = token_ids(path, SPECIAL)
    vocab = vocab_size(path)
    write_json(path, "config.json", {
        "model_type": "kimi_vl", "architectures": ["KimiVLForConditionalGeneration"],
        "vocab_size": vocab, "media_placeholder_token_id": ids["<|media_pad|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["[EOS]"]],
        "text_config": {
            "model_type": "deepseek_v3", "vocab_size": vocab, "hidden_size": HIDDEN,
            "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "n_shared_experts": 1,
            "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
            "first_k_dense_replace": 1, "kv_lora_rank": 16, "q_lora_rank": None,
            "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
            "max_position_embeddings": 2048, "rope_theta": 800000.0,
        },
        "vision_config": {"model_type": "moonvit", "depth": 2, "embed_dim": 32,
                          "hidden_size": 32, "num_heads": 4, "intermediate_size": 64,
                          "patch_size": 14, "init_pos_emb_height": 8, "init_pos_emb_width": 8,
                          "merge_kernel_size": [2, 2]},
    })
    write_json(path, "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "[BOS]", "eos_token": "[EOS]",
        "pad_token": "[PAD]", "add_bos_token": False, "model_max_length": 2048,
    })
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    write_json(path, "preprocessor_config.json", {"processor_class": "KimiVLProcessor",
                                                  "patch_size": 14})
    write_json(path, "processor_config.json", {"processor_class": "KimiVLProcessor"})
    params = flat_params(instantiate(path, seed))
    emb = next(k for k in params if k.endswith("embed_tokens.weight"))
    save_weights(path, params, seed=seed,
                 nudge=(emb, ids["<|im_end|>"], HIDDEN) if answerer else None)
    return path
