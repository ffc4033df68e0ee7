"""The three prompt protocols of the study, as versioned templates.

Bump :data:`PROMPT_VERSION` whenever wording changes: it is part of every cache key, so a new
wording is new work and old answers are never mixed with new ones.

* ``context_carry`` (the study's main protocol): one conversation per image; the image goes with the
  first user turn; emotion -> valence -> arousal, each answer kept in the context.
* ``single_shot`` (A2): one prompt asking for ``{"emotion": ..., "valence": N, "arousal": N}``.
* ``text_only`` (A1): no image; "The facial expression is <label>. Rate the arousal from 1-9." and
  the same for valence, each as its own one-turn conversation so one answer cannot anchor the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["context_carry", "single_shot", "text_only"]
Field = Literal["emotion", "valence", "arousal", "json"]
PROTOCOLS: tuple[Protocol, ...] = ("context_carry", "single_shot", "text_only")

PROMPT_VERSION: dict[str, str] = {
    "context_carry": "context_carry-v1",
    "single_shot": "single_shot-v1",
    "text_only": "text_only-v1",
}

EMOTION_QUESTION = (
    "Look at the face in this image. Which emotion does the facial expression show? "
    "Answer with one word from this list: {emotions}."
)
VALENCE_QUESTION = (
    "Rate the valence of this facial expression on a scale from 1 (very negative) to 9 "
    "(very positive). Answer with a single number."
)
AROUSAL_QUESTION = (
    "Rate the arousal of this facial expression on a scale from 1 (very calm) to 9 "
    "(very excited). Answer with a single number."
)
SINGLE_SHOT_QUESTION = (
    "Look at the face in this image. Classify the emotion of the facial expression as one of: "
    "{emotions}. Rate its valence from 1 (very negative) to 9 (very positive) and its arousal "
    "from 1 (very calm) to 9 (very excited). Answer only with JSON of the form "
    '{{"emotion": "<one word>", "valence": <1-9>, "arousal": <1-9>}}.'
)
TEXT_ONLY_QUESTION = {
    "arousal": "The facial expression is {label}. Rate the arousal from 1-9. Answer with a single number.",
    "valence": "The facial expression is {label}. Rate the valence from 1-9. Answer with a single number.",
}


@dataclass(frozen=True)
class Turn:
    """One user turn. ``field`` says what the answer to it is parsed as."""

    field: Field
    text: str
    with_image: bool = False
    label: str | None = None  # the label given in a text-only prompt


def single_shot_schema() -> dict:
    """JSON schema sent as Ollama's ``format`` for single-shot (types only, no enum: the model's
    vocabulary is not constrained, so out-of-set answers stay visible)."""
    rating = {"type": "integer"}
    return {
        "type": "object",
        "properties": {"emotion": {"type": "string"}, "valence": rating, "arousal": rating},
        "required": ["emotion", "valence", "arousal"],
    }


def conversations(
    protocol: Protocol, emotions: Sequence[str], *, label: str | None = None
) -> list[list[Turn]]:
    """The conversations one stimulus needs under ``protocol`` (each a list of user turns)."""
    listed = ", ".join(emotions)
    if protocol == "context_carry":
        return [[
            Turn("emotion", EMOTION_QUESTION.format(emotions=listed), with_image=True),
            Turn("valence", VALENCE_QUESTION),
            Turn("arousal", AROUSAL_QUESTION),
        ]]
    if protocol == "single_shot":
        return [[Turn("json", SINGLE_SHOT_QUESTION.format(emotions=listed), with_image=True)]]
    if protocol == "text_only":
        if not label:
            raise ValueError("text_only needs the emotion label to put in the prompt")
        return [
            [Turn(field, TEXT_ONLY_QUESTION[field].format(label=label), label=label)]
            for field in ("arousal", "valence")
        ]
    raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")


def calls_per_stimulus(protocol: Protocol) -> int:
    """Backend calls (generated answers) one stimulus costs under ``protocol``."""
    return {"context_carry": 3, "single_shot": 1, "text_only": 2}[protocol]
