"""The study's emotion categories (configurable in params.yaml; these are the defaults)."""

from __future__ import annotations

DEFAULT_EMOTIONS: tuple[str, ...] = (
    "angry",
    "disgusted",
    "fearful",
    "happy",
    "sad",
    "surprised",
)

DEFAULT_RACES: tuple[str, ...] = ("black", "korean")
DEFAULT_GENDERS: tuple[str, ...] = ("female", "male")
