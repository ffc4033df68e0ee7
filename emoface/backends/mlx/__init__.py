"""mlx-vlm backend package: :mod:`.backend` (conversations, logits), :mod:`.prefix` (first-turn KV
sharing), :mod:`.hidden` (A9 hidden states), :mod:`.quantize` (A4's self-quantized arm)."""

from emoface.backends.mlx.backend import DIGITS, UNSUPPORTED, VERIFIED, MlxBackend, build

__all__ = ["DIGITS", "UNSUPPORTED", "VERIFIED", "MlxBackend", "build"]
