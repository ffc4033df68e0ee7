"""Bring-your-own stimuli: a folder of images plus a CSV, imported into the standard manifest.

The metadata CSV needs the columns ``file, emotion, race, gender, identity`` (``stimulus_id`` is
optional; the file name without extension is used otherwise). ``file`` is relative to the images
folder and may not leave it. An optional norms CSV keyed by ``stimulus_id`` or ``file`` gives
``valence_mean, valence_sd, arousal_mean, arousal_sd, n_raters``.

Images are checked (exists, decodes completely), hashed, and copied into
``data/stimuli/<name>/images/``; the set is built aside and swapped in only when every row passed,
so a rejected import writes nothing and leaves an earlier set untouched.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path, PurePosixPath

import polars as pl
from PIL import Image, UnidentifiedImageError

from emoface.config import StudyParams
from emoface.errors import DataError
from emoface.io import atomic_dir, cast_columns, read_csv, write_csv
from emoface.paths import StimulusSetPaths
from emoface.stimuli.store import NORMS_TYPES, validate_manifest, validate_norms

REQUIRED = ("file", "emotion", "race", "gender", "identity")


def _safe_relative(value: str, *, file: Path, row: int) -> PurePosixPath:
    rel = PurePosixPath(value.replace("\\", "/"))
    if not value or rel.is_absolute() or value.startswith(("/", "\\")) or ":" in rel.parts[0] \
            or ".." in rel.parts:
        raise DataError(f"path {value!r} escapes the images folder (must be relative, no '..')",
                        file=file, row=row, field="file")
    return rel


def _image_size(path: Path, *, file: Path, row: int) -> tuple[int, int]:
    """Open and fully decode the image (a truncated file fails here, not later in a model)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}", file=file, row=row, field="file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"image {path} cannot be read ({err})", file=file, row=row,
                        field="file") from None


def _manifest_rows(meta: pl.DataFrame, images_dir: Path, csv: Path, study: StudyParams,
                   source: str) -> list[dict]:
    rows = []
    for i, rec in enumerate(meta.iter_rows(named=True), start=1):
        for col in REQUIRED:
            if rec[col] is None or not str(rec[col]).strip():
                raise DataError("empty value", file=csv, row=i, field=col)
        rel = _safe_relative(rec["file"].strip(), file=csv, row=i)
        src = images_dir / rel
        width, height = _image_size(src, file=csv, row=i)
        emotion = rec["emotion"].strip().lower()
        if emotion not in study.emotions:
            raise DataError(f"unknown emotion {rec['emotion']!r} (study emotions: "
                            f"{', '.join(study.emotions)})", file=csv, row=i, field="emotion")
        sid = (rec.get("stimulus_id") or "").strip() or rel.stem
        rows.append({
            "stimulus_id": sid,
            "file": f"images/{rel.as_posix()}",
            "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
            "emotion": emotion,
            "race": rec["race"].strip().lower(),
            "gender": rec["gender"].strip().lower(),
            "identity": rec["identity"].strip(),
            "source": source,
            "width": width,
            "height": height,
            "_src": str(src),
        })
    return rows


def _read_norms(norms_csv: Path, manifest: pl.DataFrame) -> pl.DataFrame:
    raw = read_csv(norms_csv)
    if "stimulus_id" not in raw.columns and "file" in raw.columns:
        by_file = dict(zip(manifest["file"].to_list(), manifest["stimulus_id"].to_list(),
                           strict=True))
        ids = []
        for i, f in enumerate(raw["file"].to_list(), start=1):
            key = f"images/{PurePosixPath((f or '').replace(chr(92), '/')).as_posix()}"
            if key not in by_file:
                raise DataError(f"file {f!r} is not in the stimulus CSV", file=norms_csv, row=i,
                                field="file")
            ids.append(by_file[key])
        raw = raw.drop("file").with_columns(pl.Series("stimulus_id", ids))
    if raw.height == 0:
        raise DataError("table is empty (no data rows)", file=norms_csv)
    typed = cast_columns(raw, NORMS_TYPES, file=norms_csv).select(list(NORMS_TYPES))
    return validate_norms(typed, manifest, file=norms_csv)


def import_stimulus_folder(
    images_dir: Path,
    metadata_csv: Path,
    out: StimulusSetPaths,
    study: StudyParams,
    *,
    norms_csv: Path | None = None,
    source: str = "user",
) -> pl.DataFrame:
    """Import a user's images + metadata CSV (+ norms CSV) as a stimulus set; returns the manifest."""
    if not images_dir.is_dir():
        raise DataError("images folder not found", file=images_dir)
    meta = read_csv(metadata_csv)
    missing = [c for c in REQUIRED if c not in meta.columns]
    if missing:
        raise DataError(f"missing column(s): {', '.join(missing)}", file=metadata_csv,
                        field=missing[0])
    if meta.height == 0:
        raise DataError("table is empty (no data rows)", file=metadata_csv)
    rows = _manifest_rows(meta, images_dir, metadata_csv, study, source)
    sources = [r.pop("_src") for r in rows]
    manifest = validate_manifest(pl.DataFrame(rows), study, file=metadata_csv)
    norms = _read_norms(norms_csv, manifest) if norms_csv is not None else None
    with atomic_dir(out.root) as tmp_root:
        for src, rel in zip(sources, manifest["file"].to_list(), strict=True):
            dst = tmp_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        write_csv(manifest, StimulusSetPaths(tmp_root).manifest)
        if norms is not None:
            write_csv(norms, StimulusSetPaths(tmp_root).norms)
    return manifest
