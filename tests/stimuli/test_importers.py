"""Bring-your-own stimuli: each bad input is rejected by file, row and field; nothing written."""

import shutil
from pathlib import Path

import polars as pl
import pytest

from emoface.config import StudyParams
from emoface.errors import DataError
from emoface.paths import StimulusSetPaths
from emoface.stimuli.importers import import_stimulus_folder
from emoface.stimuli.store import load_stimulus_set

STUDY = StudyParams()


@pytest.fixture
def user_folder(tmp_path, small_set) -> tuple[Path, Path, Path]:
    """A user's folder of 12 images with metadata.csv and norms.csv, from the small embedded set."""
    src = pl.read_csv(small_set.manifest).head(12)
    img_dir = tmp_path / "user_images"
    (img_dir / "sub").mkdir(parents=True)
    rows = []
    for i, r in enumerate(src.iter_rows(named=True)):
        rel = f"sub/face_{i:02d}.png" if i % 2 else f"face_{i:02d}.png"
        shutil.copyfile(small_set.root / r["file"], img_dir / rel)
        rows.append({"file": rel, "emotion": r["emotion"].upper(), "race": r["race"],
                     "gender": r["gender"], "identity": r["identity"]})
    meta = tmp_path / "metadata.csv"
    pl.DataFrame(rows).write_csv(meta)
    norms = tmp_path / "norms.csv"
    pl.DataFrame({
        "file": [r["file"] for r in rows],
        "valence_mean": [5.0] * 12, "valence_sd": [1.0] * 12,
        "arousal_mean": [4.5] * 12, "arousal_sd": [1.1] * 12, "n_raters": [30] * 12,
    }).write_csv(norms)
    return img_dir, meta, norms


def _edit_csv(path: Path, fn) -> None:
    fn(pl.read_csv(path, infer_schema=False)).write_csv(path)


def _set_cell(path: Path, row: int, col: str, value: str) -> None:
    def fn(df):
        vals = df[col].to_list()
        vals[row - 1] = value
        return df.with_columns(pl.Series(col, vals))
    _edit_csv(path, fn)


def test_good_import_round_trips(tmp_path, user_folder):
    img_dir, meta, norms = user_folder
    out = StimulusSetPaths(tmp_path / "data" / "mine")
    m = import_stimulus_folder(img_dir, meta, out, STUDY, norms_csv=norms)
    assert m.height == 12 and set(m["source"]) == {"user"}
    assert set(m["emotion"]) <= set(STUDY.emotions)  # "ANGRY" normalised to "angry"
    s = load_stimulus_set(out, STUDY)
    assert s.norms is not None and s.norms.height == 12
    assert (out.root / "images/sub/face_01.png").is_file()


def _expect_rejected(tmp_path, user_folder, match, *, row=None, field=None, norms=True):
    img_dir, meta, norms_csv = user_folder
    out = StimulusSetPaths(tmp_path / "data" / "mine")
    with pytest.raises(DataError, match=match) as info:
        import_stimulus_folder(img_dir, meta, out, STUDY, norms_csv=norms_csv if norms else None)
    assert not out.root.exists(), "a rejected import must write nothing"
    assert not any(p.name.startswith(".mine") for p in out.root.parent.glob(".*"))
    if row is not None:
        assert info.value.row == row, str(info.value)
    if field is not None:
        assert info.value.field == field, str(info.value)
    return info.value


def test_missing_image_file(tmp_path, user_folder):
    (user_folder[0] / "sub/face_03.png").unlink()
    err = _expect_rejected(tmp_path, user_folder, "not found", row=4, field="file")
    assert "metadata.csv" in str(err)


def test_truncated_image(tmp_path, user_folder):
    p = user_folder[0] / "face_04.png"
    p.write_bytes(p.read_bytes()[:300])
    _expect_rejected(tmp_path, user_folder, "cannot be read", row=5, field="file")


def test_not_an_image(tmp_path, user_folder):
    (user_folder[0] / "face_02.png").write_text("hello")
    _expect_rejected(tmp_path, user_folder, "cannot be read", row=3, field="file")


def test_duplicate_id(tmp_path, user_folder):
    _edit_csv(user_folder[1], lambda df: df.with_columns(
        pl.Series("stimulus_id", ["same"] * 2 + [f"id{i}" for i in range(10)])))
    _expect_rejected(tmp_path, user_folder, "stimulus_id", field="stimulus_id")


def test_unknown_emotion(tmp_path, user_folder):
    _set_cell(user_folder[1], 6, "emotion", "contempt")
    _expect_rejected(tmp_path, user_folder, "unknown emotion 'contempt'", row=6, field="emotion")


@pytest.mark.parametrize("bad", ["../escape.png", "/etc/passwd", "sub/../../x.png", "C:\\x.png"])
def test_path_escaping_the_folder(tmp_path, user_folder, bad):
    _set_cell(user_folder[1], 2, "file", bad)
    _expect_rejected(tmp_path, user_folder, "escapes", row=2, field="file")


@pytest.mark.parametrize("col,value", [("valence_mean", "9.5"), ("arousal_mean", "0")])
def test_norms_out_of_range(tmp_path, user_folder, col, value):
    _set_cell(user_folder[2], 7, col, value)
    err = _expect_rejected(tmp_path, user_folder, col, row=7, field=col)
    assert "norms.csv" in str(err)


def test_norms_not_a_number(tmp_path, user_folder):
    _set_cell(user_folder[2], 3, "arousal_sd", "high")
    _expect_rejected(tmp_path, user_folder, "high", row=3, field="arousal_sd")


def test_missing_columns(tmp_path, user_folder):
    _edit_csv(user_folder[1], lambda df: df.drop("race"))
    _expect_rejected(tmp_path, user_folder, "missing column.*race", field="race")


def test_norms_missing_column(tmp_path, user_folder):
    _edit_csv(user_folder[2], lambda df: df.drop("n_raters"))
    _expect_rejected(tmp_path, user_folder, "missing column.*n_raters", field="n_raters")


def test_empty_tables(tmp_path, user_folder):
    _edit_csv(user_folder[1], lambda df: df.head(0))
    _expect_rejected(tmp_path, user_folder, "empty", norms=False)


def test_empty_norms(tmp_path, user_folder):
    _edit_csv(user_folder[2], lambda df: df.head(0))
    _expect_rejected(tmp_path, user_folder, "empty")


def test_missing_metadata_csv(tmp_path, user_folder):
    user_folder[1].unlink()
    _expect_rejected(tmp_path, user_folder, "file not found")


def test_rejected_import_keeps_earlier_set(tmp_path, user_folder):
    img_dir, meta, norms = user_folder
    out = StimulusSetPaths(tmp_path / "data" / "mine")
    import_stimulus_folder(img_dir, meta, out, STUDY, norms_csv=norms)
    before = out.manifest.read_bytes()
    _set_cell(meta, 1, "emotion", "bored")
    with pytest.raises(DataError):
        import_stimulus_folder(img_dir, meta, out, STUDY, norms_csv=norms)
    assert out.manifest.read_bytes() == before
    load_stimulus_set(out, STUDY)


def test_loading_detects_tampered_image_and_manifest(tmp_path, user_folder):
    img_dir, meta, norms = user_folder
    out = StimulusSetPaths(tmp_path / "data" / "mine")
    import_stimulus_folder(img_dir, meta, out, STUDY, norms_csv=norms)
    (out.root / "images/face_00.png").write_bytes(b"x")
    with pytest.raises(DataError, match="hash") as info:
        load_stimulus_set(out, STUDY)
    assert info.value.row == 1 and info.value.field == "sha256"
    _set_cell(out.manifest, 2, "width", "-3")
    with pytest.raises(DataError, match="width") as info:
        load_stimulus_set(out, STUDY)
    assert info.value.row == 2
