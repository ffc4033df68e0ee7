"""Real-face importers: FER-2013 CSV and AffectNet layouts; bad rows name themselves."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from emoface.config import Params, StimuliParams, StudyParams
from emoface.errors import DataError
from emoface.paths import StimulusSetPaths
from emoface.stimuli.datasets import import_affectnet, import_fer2013, write_fer2013_demo
from emoface.stimuli.store import load_stimulus_set

STUDY = StudyParams()


@pytest.fixture
def fer_csv(tmp_path) -> Path:
    path = tmp_path / "fer2013.csv"
    write_fer2013_demo(path, STUDY, StimuliParams(), per_emotion=5)
    # add neutral rows (code 6), which the study's emotions do not include
    df = pl.read_csv(path, infer_schema=False)
    extra = df.head(3).with_columns(pl.lit("6").alias("emotion"))
    pl.concat([df, extra]).write_csv(path)
    return path


def test_fer2013_balanced_subset(tmp_path, fer_csv):
    out = StimulusSetPaths(tmp_path / "data" / "fer")
    m = import_fer2013(fer_csv, out, STUDY, per_emotion=3, seed=1)
    assert m.height == 18 and m.group_by("emotion").len()["len"].to_list() == [3] * 6
    assert "neutral" not in set(m["emotion"]) and set(m["source"]) == {"fer2013"}
    s = load_stimulus_set(out, STUDY)
    assert s.norms is None  # FER-2013 has no valence/arousal: analyses must say so
    assert Image.open(out.root / m["file"][0]).size == (48, 48)
    again = import_fer2013(fer_csv, StimulusSetPaths(tmp_path / "again"), STUDY,
                           per_emotion=3, seed=1)
    assert again["sha256"].to_list() == m["sha256"].to_list()  # same seed, same subset


def _break(path: Path, row: int, col: str, value: str) -> None:
    df = pl.read_csv(path, infer_schema=False)
    vals = df[col].to_list()
    vals[row - 1] = value
    df.with_columns(pl.Series(col, vals)).write_csv(path)


@pytest.mark.parametrize("col,value,match", [
    ("pixels", " ".join(["0"] * 100), "expected 2304 pixel values"),
    ("pixels", " ".join(["0"] * 2303 + ["x"]), "a pixel is not an integer 0-255"),
    ("pixels", " ".join(["0"] * 2303 + ["300"]), "not an integer 0-255"),
    ("emotion", "9", "unknown emotion code"),
    ("emotion", "happy", "unknown emotion code"),
])
def test_fer2013_bad_rows(tmp_path, fer_csv, col, value, match):
    _break(fer_csv, 7, col, value)
    out = StimulusSetPaths(tmp_path / "data" / "fer")
    with pytest.raises(DataError, match=match) as info:
        import_fer2013(fer_csv, out, STUDY, per_emotion=3, seed=1)
    assert info.value.row == 7 and info.value.field == col
    assert not out.root.exists()


def _affectnet(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "affectnet"
    rows = []
    for code, name in [(1, "happy"), (2, "sad"), (3, "surprise"), (4, "fear"), (5, "disgust"),
                       (6, "anger"), (0, "neutral")]:
        (root / name).mkdir(parents=True)
        for k in range(3):
            f = root / name / f"{k}.png"
            Image.new("RGB", (32, 32), (code * 30, k * 40, 90)).save(f)
            rows.append({"subDirectory_filePath": f"{name}/{k}.png", "expression": str(code),
                         "valence": str(round(-0.5 + 0.2 * k, 2)), "arousal": "0.25"})
    ann = tmp_path / "annotations.csv"
    pl.DataFrame(rows).write_csv(ann)
    return root, ann


def test_affectnet_folders_and_annotations(tmp_path):
    root, ann = _affectnet(tmp_path)
    m = import_affectnet(root, StimulusSetPaths(tmp_path / "a"), STUDY, per_emotion=2, seed=0)
    assert m.height == 12 and set(m["emotion"]) == set(STUDY.emotions)
    out = StimulusSetPaths(tmp_path / "b")
    m2 = import_affectnet(root, out, STUDY, per_emotion=3, seed=0, annotations=ann)
    s = load_stimulus_set(out, STUDY)
    assert m2.height == 18 and s.norms is not None
    # [-1, 1] -> 1-9 as 5 + 4x: arousal 0.25 -> 6.0
    assert set(s.norms["arousal_mean"]) == {6.0}
    assert s.norms["valence_mean"].min() == pytest.approx(5 + 4 * -0.5)


def test_affectnet_valence_out_of_range(tmp_path):
    root, ann = _affectnet(tmp_path)
    _break(ann, 4, "valence", "1.5")
    with pytest.raises(DataError, match=r"outside \[-1, 1\]") as info:
        import_affectnet(root, StimulusSetPaths(tmp_path / "b"), STUDY, per_emotion=3, seed=0,
                         annotations=ann)
    assert info.value.row == 4 and info.value.field == "valence"


def test_demo_csv_is_labelled(tmp_path):
    path = tmp_path / "demo.csv"
    n = write_fer2013_demo(path, Params().study, Params().stimuli, per_emotion=4)
    df = pl.read_csv(path)
    assert n == 24 and set(df["Usage"]) == {"SyntheticDemo"}


def test_fer2013_usage_without_usage_column_is_an_error(tmp_path, fer_csv):
    pl.read_csv(fer_csv, infer_schema=False).drop("Usage").write_csv(fer_csv)
    out = StimulusSetPaths(tmp_path / "data" / "fer")
    with pytest.raises(DataError, match="has no Usage column") as info:
        import_fer2013(fer_csv, out, STUDY, per_emotion=3, seed=1, usage="PublicTest")
    assert info.value.field == "Usage" and str(fer_csv) in str(info.value)
    assert not out.root.exists()


def test_fer2013_usage_matching_no_row_says_so(tmp_path, fer_csv):
    out = StimulusSetPaths(tmp_path / "data" / "fer")
    with pytest.raises(DataError, match=r"no row has Usage 'PublicTest' \(values in the file: "
                                        r"SyntheticDemo\)"):
        import_fer2013(fer_csv, out, STUDY, per_emotion=3, seed=1, usage="PublicTest")
    assert not out.root.exists()
    m = import_fer2013(fer_csv, out, STUDY, per_emotion=3, seed=1, usage="SyntheticDemo")
    assert m.height == 18


def test_affectnet_skips_hidden_files(tmp_path):
    root, _ = _affectnet(tmp_path)
    (root / "happy" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "happy" / "._0.png").write_bytes(b"AppleDouble")
    m = import_affectnet(root, StimulusSetPaths(tmp_path / "a"), STUDY, per_emotion=2, seed=0)
    assert m.height == 12


def test_affectnet_symlink_leaving_the_folder_is_refused(tmp_path):
    root, _ = _affectnet(tmp_path)
    outside = tmp_path / "outside.png"
    Image.new("RGB", (32, 32)).save(outside)
    for f in (root / "happy").iterdir():
        f.unlink()
        f.symlink_to(outside)
    out = StimulusSetPaths(tmp_path / "a")
    with pytest.raises(DataError, match="outside the images folder"):
        import_affectnet(root, out, STUDY, per_emotion=2, seed=0)
    assert not out.root.exists()
