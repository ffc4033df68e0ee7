"""Parsing model answers into emotion / valence / arousal, with an outcome per field.

Outcomes are data: a field that cannot be read stays ``None`` with a status saying why; nothing is
coerced silently. Statuses:

* ``ok`` — the answer is exactly the expected form ("angry", "7", or clean JSON);
* ``normalised`` — recoverable with a documented rule ("Anger." -> angry, "7/9" -> 7,
  "seven" -> 7, "I'd say 6" -> 6, JSON inside prose);
* ``out_of_set`` — an emotion word outside the study's categories (kept in ``emotion``);
* ``out_of_range`` — a number outside 1-9 ("10", "0"); the value stays None;
* ``refused`` — the model declined ("I can't determine emotions from images");
* ``unparseable`` — empty, ambiguous (two different answers) or no answer found.

Bump :data:`PARSER_VERSION` when a rule changes what a stored answer would parse to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

PARSER_VERSION = "parser-v1"

Status = Literal["ok", "normalised", "out_of_set", "out_of_range", "refused", "unparseable"]
STATUSES: tuple[str, ...] = ("ok", "normalised", "out_of_set", "out_of_range", "refused",
                             "unparseable")

SYNONYMS: dict[str, tuple[str, ...]] = {
    "angry": ("angry", "anger", "mad", "furious", "rage", "enraged", "irritated", "annoyed"),
    "disgusted": ("disgusted", "disgust", "disgusting", "revulsion", "repulsed", "grossed out"),
    "fearful": ("fearful", "fear", "afraid", "scared", "frightened", "terrified", "anxious"),
    "happy": ("happy", "happiness", "joy", "joyful", "glad", "cheerful", "smiling", "delighted"),
    "sad": ("sad", "sadness", "unhappy", "sorrowful", "sorrow", "down", "depressed", "gloomy"),
    "surprised": ("surprised", "surprise", "astonished", "amazed", "shocked", "startled"),
}
# Emotion words a model may use that are outside the default six: kept and flagged.
OTHER_EMOTIONS = ("neutral", "contempt", "calm", "confused", "bored", "tired", "serious",
                  "content", "pensive", "worried", "excited")
NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_REFUSAL = re.compile(
    r"\b(can(?:'|no)?t|cannot|unable|not able|won't|sorry|as an ai|i do not|i don't|"
    r"impossible|not possible)\b"
)
_MARKDOWN = re.compile(r"[*_`#>]+")
# Scale mentions that are not the answer: "1-9", "1 to 9", "(1-9)", "on a scale of 1 to 9".
_SCALE = re.compile(r"(?:on )?(?:a |the )?(?:scale )?(?:of |from )?\(?\b1\s*(?:-|–|to)\s*9\b\)?")
_OUT_OF = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:/|out of)\s*(?:9|10)\b")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])|(?<![\w.])-?\d+(?:\.\d+)?(?=\.(?:\s|$))")


@dataclass(frozen=True)
class Parsed:
    """One parsed field: the value (None unless usable, or the kept out-of-set word) and status."""

    value: str | float | None
    status: Status


def _clean(text: str) -> str:
    return _MARKDOWN.sub("", text or "").strip().lower()


def _mentions(text: str, emotions: Sequence[str]) -> set[str]:
    found = set()
    for emotion in emotions:
        words = SYNONYMS.get(emotion, (emotion,))
        for w in words:
            for m in re.finditer(rf"\b{re.escape(w)}\b", text):
                before = text[max(0, m.start() - 8):m.start()]
                if not re.search(r"\b(not|no|n't)\s+$", before):
                    found.add(emotion)
    return found


def parse_emotion(text: str, emotions: Sequence[str]) -> Parsed:
    """Parse an emotion answer against the study's categories."""
    t = _clean(text)
    if not t:
        return Parsed(None, "unparseable")
    bare = t.strip(" .!\"'")
    if bare in emotions:
        return Parsed(bare, "ok")
    found = _mentions(t, emotions)
    if len(found) == 1:
        return Parsed(found.pop(), "normalised")
    if len(found) > 1:
        return Parsed(None, "unparseable")
    if _REFUSAL.search(t):
        return Parsed(None, "refused")
    others = [w for w in OTHER_EMOTIONS if re.search(rf"\b{w}\b", t)]
    if len(others) == 1:
        return Parsed(others[0], "out_of_set")
    if re.fullmatch(r"[a-z]+", bare):
        return Parsed(bare, "out_of_set")
    return Parsed(None, "unparseable")


def parse_rating(text: str, low: int = 1, high: int = 9) -> Parsed:
    """Parse a 1-9 rating answer."""
    t = _clean(text)
    if not t:
        return Parsed(None, "unparseable")
    if re.fullmatch(r"\d", t) and low <= int(t) <= high:
        return Parsed(float(t), "ok")
    m = _OUT_OF.search(t)
    candidates: list[float]
    if m:
        candidates = [float(m.group(1))]
    else:
        stripped = _SCALE.sub(" ", t)
        candidates = [float(x) for x in _NUMBER.findall(stripped)]
        if not candidates:
            words = [NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", stripped) if w in NUMBER_WORDS]
            candidates = [float(w) for w in words]
    distinct = sorted(set(candidates))
    if not distinct:
        return Parsed(None, "refused" if _REFUSAL.search(t) else "unparseable")
    if len(distinct) > 1:
        return Parsed(None, "unparseable")
    value = distinct[0]
    if not low <= value <= high:
        return Parsed(None, "out_of_range")
    return Parsed(value, "normalised")


def _json_object(text: str) -> dict | None:
    for m in re.finditer(r"\{[^{}]*\}", text or "", flags=re.S):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return {str(k).lower(): v for k, v in obj.items()}
    return None


def parse_single_shot(text: str, emotions: Sequence[str]) -> dict[str, Parsed]:
    """Parse a single-shot answer (JSON, JSON inside prose, or prose as a last resort)."""
    raw = (text or "").strip()
    obj = _json_object(raw)
    if obj is None:
        fallback = {f: _prose_field(raw, f, emotions) for f in ("emotion", "valence", "arousal")}
        return {f: (p if p.status != "ok" else Parsed(p.value, "normalised"))
                for f, p in fallback.items()}
    clean_json = raw.startswith("{") and raw.endswith("}")
    out: dict[str, Parsed] = {}
    for field in ("emotion", "valence", "arousal"):
        if field not in obj or obj[field] is None:
            out[field] = Parsed(None, "unparseable")
            continue
        value = str(obj[field])
        p = parse_emotion(value, emotions) if field == "emotion" else parse_rating(value)
        if p.status == "ok" and not clean_json:
            p = Parsed(p.value, "normalised")
        out[field] = p
    return out


def _prose_field(text: str, field: str, emotions: Sequence[str]) -> Parsed:
    t = _clean(text)
    if field == "emotion":
        m = re.search(r"emotion\W+(\w+)", t)
        return parse_emotion(m.group(1) if m else t, emotions)
    m = re.search(rf"{field}\D{{0,20}}?(\d+(?:\.\d+)?)", t)
    if not m:
        return Parsed(None, "refused" if _REFUSAL.search(t) else "unparseable")
    return parse_rating(m.group(1))
