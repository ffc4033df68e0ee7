"""The odd-answer corpus (tests/fixtures/odd_answers.json): every outcome is data, nothing coerced."""

import json
from pathlib import Path

import pytest

from emoface.emotions import DEFAULT_EMOTIONS
from emoface.parsing import STATUSES, parse_emotion, parse_rating, parse_single_shot

CORPUS = json.loads((Path(__file__).parent / "fixtures/odd_answers.json").read_text())


def test_corpus_is_large_enough():
    assert sum(len(v) for v in CORPUS.values()) >= 50


@pytest.mark.parametrize("text,value,status", CORPUS["emotion"])
def test_emotion(text, value, status):
    p = parse_emotion(text, DEFAULT_EMOTIONS)
    assert (p.value, p.status) == (value, status)


@pytest.mark.parametrize("text,value,status", CORPUS["rating"])
def test_rating(text, value, status):
    p = parse_rating(text)
    assert (p.value, p.status) == (value, status)
    assert p.status in STATUSES


@pytest.mark.parametrize("text,emotion,valence,arousal", CORPUS["single_shot"])
def test_single_shot(text, emotion, valence, arousal):
    out = parse_single_shot(text, DEFAULT_EMOTIONS)
    got = {f: [out[f].value, out[f].status] for f in ("emotion", "valence", "arousal")}
    assert got == {"emotion": emotion, "valence": valence, "arousal": arousal}


def test_failed_fields_stay_null():
    for text in ("10", "7 or 8", "", "I can't"):
        p = parse_rating(text)
        assert p.value is None and p.status != "ok"
