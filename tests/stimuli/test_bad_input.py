"""Bad input through the command line, as a researcher meets it: each is refused with exit 2 and one
line naming the file, row or field, and ``data/`` (and everything beside it) is left byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from emoface.cli import app
from tests.conftest import REPO


def _listing(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the hash of its content (or its link target / 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        elif not p.is_file():
            out[rel] = "special"  # a FIFO the test made: reading it would block
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def lab(tmp_path, small_set):
    """A project folder: data/ with one imported set, a victim folder beside it, a user's images."""
    data = tmp_path / "data"
    shutil.copytree(small_set.root, data / "stimuli" / "small")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("three years of work")
    images = tmp_path / "faces"
    (images / "sub").mkdir(parents=True)
    src = pl.read_csv(small_set.manifest).head(6)
    rows = []
    for i, r in enumerate(src.iter_rows(named=True)):
        rel = f"sub/f{i}.png" if i % 2 else f"f{i}.png"
        shutil.copyfile(small_set.root / r["file"], images / rel)
        rows.append({"file": rel, "emotion": r["emotion"], "race": r["race"],
                     "gender": r["gender"], "identity": r["identity"]})
    csv = tmp_path / "faces.csv"
    pl.DataFrame(rows).write_csv(csv)
    return tmp_path, data, images, csv


def _run(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, args)
    return res.exit_code, res.stderr


def _refused(lab, args: list[str], *needles: str) -> str:
    """Run; expect exit 2, one line naming ``needles``, nothing changed anywhere in the project."""
    tmp = lab[0]
    before = _listing(tmp)
    code, err = _run(args)
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert _listing(tmp) == before, "a refused command must not write or delete anything"
    return lines[0]


def _import(lab, name: str, csv: Path | None = None, params: Path | None = None) -> list[str]:
    tmp, data, images, default_csv = lab
    return ["stimuli", "import", name, "--images", str(images), "--csv", str(csv or default_csv),
            "--data", str(data), "--params", str(params or REPO / "params.yaml")]


@pytest.mark.parametrize("name", ["../../victim", "../victim", "", ".", "..", "Small", "a/b",
                                  "ok name"])
def test_set_name_that_could_escape_is_refused(lab, name):
    _refused(lab, _import(lab, name), "stimulus set name", "NAME")


def test_absolute_set_name_is_refused(lab):
    _refused(lab, _import(lab, str(lab[0] / "victim")), "stimulus set name")


def test_infer_set_outside_data_is_refused(lab):
    _refused(lab, ["infer", "--set", "../../victim", "--data", str(lab[1]),
                   "--params", str(REPO / "params.yaml")], "stimulus set name")


def test_swap_refuses_a_folder_that_is_not_a_stimulus_set(lab, small_params):
    from emoface.errors import DataError
    from emoface.paths import StimulusSetPaths
    from emoface.stimuli.importers import import_stimulus_folder

    tmp, data, images, csv = lab
    target = data / "stimuli" / "notes"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing to replace"):
        import_stimulus_folder(images, csv, StimulusSetPaths(target), small_params.study)
    assert (target / "keep.txt").read_text() == "mine"


def test_good_import_then_reimport_replaces_only_that_set(lab):
    tmp, data, images, csv = lab
    code, err = _run(_import(lab, "mine"))
    assert code == 0, err
    small = _listing(data / "stimuli" / "small")
    code, err = _run(_import(lab, "mine"))
    assert code == 0, err
    assert _listing(data / "stimuli" / "small") == small
    assert (tmp / "victim" / "thesis.txt").exists()


def test_symlink_to_a_file_outside_is_refused(lab):
    tmp, data, images, csv = lab
    (images / "f2.png").unlink()
    (images / "f2.png").symlink_to(tmp / "victim" / "thesis.txt")
    _refused(lab, _import(lab, "mine"), "row 3", "field 'file'", "outside the images folder")


def test_symlinked_folder_outside_is_refused(lab):
    tmp, data, images, csv = lab
    outside = tmp / "elsewhere"
    shutil.move(images / "sub", outside)
    (images / "sub").symlink_to(outside, target_is_directory=True)
    _refused(lab, _import(lab, "mine"), "row 2", "outside the images folder")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (the data is a few bytes): enough to test that
    the size is refused before decoding, without making a 400-megapixel file."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("w,h,needle", [(20000, 20000, "more than 179.0 megapixels"),
                                        (12000, 12000, "144.0 megapixels")])
def test_huge_images_are_refused_before_decoding(lab, w, h, needle):
    _png_header_only(lab[2] / "f4.png", w, h)
    _refused(lab, _import(lab, "mine"), "row 5", needle, "stimuli.max_image_pixels")


def test_one_pixel_and_animated_images_are_refused(lab):
    images = lab[2]
    Image.new("RGB", (1, 1)).save(images / "f0.png")
    _refused(lab, _import(lab, "mine"), "row 1", "1 x 1 pixels is too small")
    shutil.copyfile(images / "f2.png", images / "f0.png")
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green")]
    frames[0].save(images / "anim.gif", save_all=True, append_images=frames[1:])
    _edit = pl.read_csv(lab[3]).with_columns(
        pl.Series("file", ["anim.gif"] + pl.read_csv(lab[3])["file"].to_list()[1:]))
    _edit.write_csv(lab[3])
    _refused(lab, _import(lab, "mine"), "row 1", "animated image (3 frames)")


def test_odd_modes_are_stored_as_rgb_and_recorded(lab):
    tmp, data, images, csv = lab
    base = Image.open(images / "f0.png").convert("RGB")
    base.convert("CMYK").save(images / "f0.jpg")  # CMYK JPEG
    arr16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(arr16).save(images / "sub/f1.png")  # 16-bit grayscale
    base.convert("P").save(images / "f2.png")  # palette
    rgba = base.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited over white
    rgba.save(images / "sub/f3.png")
    meta = pl.read_csv(csv)
    meta.with_columns(pl.Series("file", ["f0.jpg", *meta["file"].to_list()[1:]])).write_csv(csv)
    code, err = _run(_import(lab, "mine"))
    assert code == 0, err
    out = data / "stimuli" / "mine"
    conv = pl.read_csv(out / "conversions.csv")
    assert dict(zip(conv["stimulus_id"], conv["original_mode"], strict=True)) == {
        "f0": "CMYK", "f1": "I;16", "f2": "P", "f3": "RGBA"}
    manifest = pl.read_csv(out / "manifest.csv")
    for f in manifest["file"]:
        with Image.open(out / f) as im:
            assert im.mode in ("RGB", "L"), (f, im.mode)
    assert "images/f0.png" in manifest["file"].to_list()  # the CMYK JPEG is now an RGB PNG
    with Image.open(out / "images/sub/f3.png") as im:
        assert im.getpixel((0, 0)) == (255, 255, 255)
    with Image.open(out / "images/sub/f1.png") as im:  # 16-bit values scaled back to 8 bits
        assert np.array_equal(np.asarray(im.convert("L")), np.asarray(base.convert("L")))
    assert _run(["stimuli", "check", "mine", "--data", str(data),
                 "--params", str(REPO / "params.yaml")])[0] == 0


def test_non_ascii_file_name_says_which_column_to_add(lab):
    tmp, data, images, csv = lab
    os.rename(images / "f0.png", images / "fröhlich.png")
    meta = pl.read_csv(csv)
    meta.with_columns(pl.Series("file", ["fröhlich.png", *meta["file"].to_list()[1:]])
                      ).write_csv(csv)
    _refused(lab, _import(lab, "mine"), "row 1", "add a stimulus_id column")


def test_same_file_name_in_two_folders_says_which_column_to_add(lab):
    tmp, data, images, csv = lab
    shutil.copyfile(images / "f0.png", images / "sub" / "f0.png")
    meta = pl.read_csv(csv)
    meta.with_columns(pl.Series("file", [*meta["file"].to_list()[:5], "sub/f0.png"])
                      ).write_csv(csv)
    _refused(lab, _import(lab, "mine"), "row 6", "also that of row 1",
             "add a stimulus_id column")


def test_norms_file_values_are_whitespace_stripped(lab):
    tmp, data, images, csv = lab
    files = pl.read_csv(csv)["file"].to_list()
    norms = tmp / "norms.csv"
    pl.DataFrame({"file": [f"  {f} " for f in files], "valence_mean": [5.0] * 6,
                  "valence_sd": [1.0] * 6, "arousal_mean": [4.0] * 6, "arousal_sd": [1.0] * 6,
                  "n_raters": [20] * 6}).write_csv(norms)
    code, err = _run([*_import(lab, "mine"), "--norms", str(norms)])
    assert code == 0, err
    assert (data / "stimuli/mine/norms.csv").is_file()


@pytest.mark.parametrize("edit,needles", [
    ("ablations:\n  A3:\n    temperatures: [0.0, 3.0]\n", ["ablations.A3.temperatures.1"]),
    ("ablations:\n  A3:\n    temperatures: [0.0, .nan]\n", ["ablations.A3.temperatures.1"]),
    ("ablations:\n  A3:\n    temperatures: [0.0, 0.7, 0.7]\n",
     ["ablations.A3.temperatures", "temperature 0.7 is listed twice"]),
    ("models:\n  study: [ollama/gemma3:4b, ollama/gemma3:4b]\n",
     ["models.study", "model 'ollama/gemma3:4b' is listed twice"]),
    ("models:\n  study: []\n", ["models.study"]),
    ("ablations:\n  A6:\n    models: [simulated/kimi-vl, simulated/kimi-vl]\n",
     ["ablations.A6.models", "listed twice"]),
    ("stimuli:\n  seed: 1\n  seed: 2\n", ["key 'seed' appears twice", "lines 2 and 3"]),
])
def test_bad_params_name_file_and_key(lab, edit, needles):
    params = lab[0] / "params.yaml"
    params.write_text(edit)
    _refused(lab, ["stimuli", "check", "small", "--data", str(lab[1]), "--params", str(params)],
             str(params), *needles)


def test_non_utf8_params_is_one_line(lab):
    params = lab[0] / "params.yaml"
    params.write_bytes("study:\n  # Gr\u00fc\u00dfe\n".encode("latin-1"))
    _refused(lab, ["stimuli", "check", "small", "--data", str(lab[1]), "--params", str(params)],
             str(params), "line 2", "not UTF-8")


# --- inputs that hung or were wrongly refused (issue 23 item 7) --------------------------------

def test_a_named_pipe_in_the_images_folder_is_refused_without_waiting(lab):
    images = lab[2]
    (images / "f2.png").unlink()
    os.mkfifo(images / "f2.png")  # nobody writes to it: a plain open would block forever
    _refused(lab, _import(lab, "mine"), "row 3", "field 'file'", "named pipe (FIFO)",
             "only regular files")


def test_a_device_or_folder_named_as_an_image_is_refused(lab):
    tmp, data, images, csv = lab
    (images / "f2.png").unlink()
    (images / "f2.png").mkdir()
    _refused(lab, _import(lab, "mine"), "row 3", "folder")


def test_converted_images_keep_their_norms_row_by_original_name(lab):
    tmp, data, images, csv = lab
    base = Image.open(images / "f0.png").convert("RGB")
    base.convert("CMYK").save(images / "f0.jpg")  # CMYK JPEG -> stored as f0.png
    gray = np.asarray(base.convert("L"), dtype=np.float32) / 255.0
    Image.fromarray(gray, mode="F").save(images / "sub/f1.tif")  # float TIFF -> stored as f1.png
    meta = pl.read_csv(csv)
    files = ["f0.jpg", "sub/f1.tif", *meta["file"].to_list()[2:]]
    meta.with_columns(pl.Series("file", files)).write_csv(csv)
    norms = tmp / "norms.csv"
    pl.DataFrame({"file": files, "valence_mean": [5.0, 6.0, 5.0, 5.0, 5.0, 5.0],
                  "valence_sd": [1.0] * 6, "arousal_mean": [4.0] * 6, "arousal_sd": [1.0] * 6,
                  "n_raters": [20] * 6}).write_csv(norms)
    code, err = _run([*_import(lab, "mine"), "--norms", str(norms)])
    assert code == 0, err
    out = data / "stimuli" / "mine"
    manifest = pl.read_csv(out / "manifest.csv")
    assert manifest["file"].to_list()[:2] == ["images/f0.png", "images/sub/f1.png"]
    stored = pl.read_csv(out / "norms.csv")
    assert dict(zip(stored["stimulus_id"], stored["valence_mean"], strict=True))["f1"] == 6.0
    conv = pl.read_csv(out / "conversions.csv")
    assert dict(zip(conv["source_file"], conv["original_mode"], strict=True)) == {
        "f0.jpg": "CMYK", "sub/f1.tif": "F"}
    with Image.open(out / "images/sub/f1.png") as im:  # float 0-1 scaled to 0-255
        assert np.abs(np.asarray(im.convert("L"), dtype=int)
                      - np.asarray(base.convert("L"), dtype=int)).max() <= 1


def test_exif_orientation_is_applied_and_recorded(lab):
    tmp, data, images, csv = lab
    # a 40 x 24 landscape photo with a red left column, taken with the camera turned: orientation
    # 6 means "rotate 90 degrees clockwise to view", so the viewer sees a 24 x 40 portrait whose
    # top row is red
    arr = np.zeros((24, 40, 3), dtype=np.uint8)
    arr[:, 0] = (255, 0, 0)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(images / "f0.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
    meta = pl.read_csv(csv)
    meta.with_columns(pl.Series("file", ["f0.jpg", *meta["file"].to_list()[1:]])).write_csv(csv)
    code, err = _run(_import(lab, "mine"))
    assert code == 0, err
    out = data / "stimuli" / "mine"
    manifest = pl.read_csv(out / "manifest.csv")
    row = manifest.filter(pl.col("stimulus_id") == "f0").row(0, named=True)
    assert row["file"] == "images/f0.png" and (row["width"], row["height"]) == (24, 40)
    with Image.open(out / row["file"]) as stored:
        up = np.asarray(stored.convert("RGB"), dtype=int)
    assert up.shape == (40, 24, 3)
    assert up[0, :, 0].min() > 200 and up[0, :, 1].max() < 60  # the red column is now on top
    assert up[-1, :, 0].max() < 60
    conv = pl.read_csv(out / "conversions.csv")
    assert conv.filter(pl.col("stimulus_id") == "f0")["exif_orientation"].to_list() == [6]


@pytest.mark.parametrize("field,value", [
    ("race", "=1+1"), ("gender", "+cmd|' /C calc'!A0"), ("identity", "-2+3"),
    ("emotion", "@SUM(A1:A2)"), ("race", "\t=1+1"),
])
def test_formula_like_manifest_cells_are_refused(lab, field, value):
    tmp, data, images, csv = lab
    meta = pl.read_csv(csv)
    vals = meta[field].to_list()
    vals[3] = value
    meta.with_columns(pl.Series(field, vals)).write_csv(csv)
    _refused(lab, _import(lab, "mine"), str(csv), "row 4", f"field '{field}'", "formula")


def test_formula_like_norms_cells_are_refused(lab):
    tmp, data, images, csv = lab
    files = pl.read_csv(csv)["file"].to_list()
    norms = tmp / "norms.csv"
    pl.DataFrame({"file": [*files[:2], "=HYPERLINK(\"http://x\")", *files[3:]],
                  "valence_mean": [5.0] * 6, "valence_sd": [1.0] * 6, "arousal_mean": [4.0] * 6,
                  "arousal_sd": [1.0] * 6, "n_raters": [20] * 6}).write_csv(norms)
    _refused(lab, [*_import(lab, "mine"), "--norms", str(norms)], str(norms), "row 3",
             "field 'file'", "formula")
