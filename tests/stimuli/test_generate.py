import numpy as np
import polars as pl
import pytest
from PIL import Image

from emoface.config import Params, StudyParams
from emoface.errors import ConfigError
from emoface.io import sha256_file
from emoface.paths import StimulusSetPaths
from emoface.stimuli.generate import generate_stimulus_set
from emoface.stimuli.store import load_stimulus_set


def test_small_set_is_complete_and_valid(small_set, small_params):
    s = load_stimulus_set(small_set, small_params.study)
    m = s.manifest
    assert m.height == 48
    assert set(m["source"]) == {"synthetic"}
    # every identity appears in every emotion exactly once
    counts = m.group_by("identity").agg(pl.col("emotion").n_unique().alias("k"), pl.len())
    assert counts["k"].to_list() == [6] * 8 and counts["len"].to_list() == [6] * 8
    assert {"black", "korean"} <= set(m["race"])
    img = Image.open(small_set.root / m["file"][0])
    assert img.size == (128, 128) and img.mode == "RGB"
    assert s.norms is not None and s.norms.height == 48


def test_same_seed_gives_byte_identical_files(tmp_path, small_set, small_params):
    again = StimulusSetPaths(tmp_path / "again")
    generate_stimulus_set(small_params.study, small_params.stimuli, again)
    for name in ("manifest.csv", "norms.csv"):
        assert (again.root / name).read_bytes() == (small_set.root / name).read_bytes()
    for f in sorted(small_set.images.iterdir()):
        assert sha256_file(f) == sha256_file(again.images / f.name)


def test_other_seed_gives_other_faces(tmp_path, small_set, small_params):
    other = small_params.stimuli.model_copy(update={"seed": 7})
    out = StimulusSetPaths(tmp_path / "other")
    generate_stimulus_set(small_params.study, other, out)
    a = pl.read_csv(small_set.manifest)["sha256"].to_list()
    b = pl.read_csv(out.manifest)["sha256"].to_list()
    assert len(set(a) & set(b)) == 0


def test_images_within_one_emotion_differ(small_set):
    lat = pl.read_parquet(small_set.latents)
    m = pl.read_csv(small_set.manifest)
    both = m.join(lat, on="stimulus_id")
    for emotion, g in both.group_by("emotion"):
        assert g["intensity"].std() > 0.05, emotion
        assert len(set(g["sha256"])) == g.height
    # pixel-level: two angry faces of the same identity-cell are not copies
    angry = m.filter(pl.col("emotion") == "angry")["file"].to_list()[:2]
    a, b = (np.asarray(Image.open(small_set.root / f), dtype=float) for f in angry)
    assert np.abs(a - b).mean() > 1.0


def test_norms_follow_the_circumplex(small_set):
    n = pl.read_csv(small_set.norms).join(pl.read_csv(small_set.manifest), on="stimulus_id")
    means = n.group_by("emotion").agg(pl.col("valence_mean").mean(), pl.col("arousal_mean").mean())
    by = {r["emotion"]: r for r in means.iter_rows(named=True)}
    assert by["happy"]["valence_mean"] > 6 > 4 > by["angry"]["valence_mean"]
    assert by["surprised"]["arousal_mean"] > by["sad"]["arousal_mean"] + 2
    assert n["n_raters"].min() >= 20 and n["n_raters"].max() <= 40


def test_unsupported_emotion_is_a_config_error(tmp_path):
    p = Params(study=StudyParams(emotions=("angry", "contempt")))
    with pytest.raises(ConfigError, match="contempt"):
        generate_stimulus_set(p.study, p.stimuli, StimulusSetPaths(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_full_embedded_set(tmp_path):
    p = Params()
    out = StimulusSetPaths(tmp_path / "embedded")
    summary = generate_stimulus_set(p.study, p.stimuli, out)
    s = load_stimulus_set(out, p.study)
    assert s.manifest.height == 1440 and s.norms is not None and s.norms.height == 1440
    assert s.manifest["identity"].n_unique() == 240
    print(f"\nfull set: {summary['seconds']:.1f} s, {summary['image_bytes'] / 1e6:.1f} MB")
