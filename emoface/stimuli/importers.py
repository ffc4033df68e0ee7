"""Bring-your-own stimuli: a folder of images plus a CSV, imported into the standard manifest.

The metadata CSV needs the columns ``file, emotion, race, gender, identity`` (``stimulus_id`` is
optional; the file name without extension is used otherwise). ``file`` is relative to the images
folder and may not leave it. An optional norms CSV keyed by ``stimulus_id`` or ``file`` gives
``valence_mean, valence_sd, arousal_mean, arousal_sd, n_raters``; its ``file`` is the name in the
metadata CSV (an image stored under another name after conversion is still found by it).
A text cell that starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) is refused,
naming file, row and field: these cells reach CSV exports, and a spreadsheet runs them as formulas.

Images are checked (inside the folder after resolving symbolic links, decodes completely, size
limits, one frame: :mod:`emoface.stimuli.images`), hashed, and copied into
``data/stimuli/<name>/images/``; images in modes other than 8-bit RGB or grayscale, or with an EXIF
orientation (applied), are stored as RGB PNGs and their original mode and orientation are listed in
``conversions.csv``. The set is built aside and swapped in
only when every row passed, so a rejected import writes nothing and leaves an earlier set untouched.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath

import polars as pl

from emoface.config import StudyParams
from emoface.errors import DataError
from emoface.io import cast_columns, read_csv, write_csv
from emoface.paths import StimulusSetPaths
from emoface.stimuli.images import check_image, resolve_inside
from emoface.stimuli.store import NORMS_TYPES, replace_set, validate_manifest, validate_norms

REQUIRED = ("file", "emotion", "race", "gender", "identity")
DEFAULT_MAX_PIXELS = 40_000_000
CONVERSIONS = "conversions.csv"  # stimulus_id, source_file, original_mode, exif_orientation,
#                                  stored_as
#: first characters that make a spreadsheet evaluate a cell (OWASP "CSV injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def check_no_formula(value: object, *, file: Path, row: int, field: str) -> None:
    """Refuse a text cell a spreadsheet would run as a formula (``=1+1``, ``@SUM(...)``, ...)."""
    if isinstance(value, str) and value.lstrip(" ").startswith(FORMULA_STARTS):
        raise DataError(f"value {value!r} starts with {value.lstrip(' ')[0]!r}, which a spreadsheet "
                        "opening an exported CSV runs as a formula; remove that character",
                        file=file, row=row, field=field)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")  # the manifest schema's stimulus_id pattern


def _safe_relative(value: str, *, file: Path, row: int) -> PurePosixPath:
    rel = PurePosixPath(value.replace("\\", "/"))
    if not value or rel.is_absolute() or value.startswith(("/", "\\")) or ":" in rel.parts[0] \
            or ".." in rel.parts:
        raise DataError(f"path {value!r} escapes the images folder (must be relative, no '..')",
                        file=file, row=row, field="file")
    return rel


def _derived_id(rec: dict, rel: PurePosixPath, seen: dict[str, int], *, csv: Path,
                row: int) -> str:
    """The row's stimulus_id (given, or the file name without extension), checked with a hint."""
    given = (rec.get("stimulus_id") or "").strip()
    sid = given or rel.stem
    how = "the stimulus_id column" if given else f"the file name {rel.name!r}"
    if not _ID.match(sid):
        fix = "fix the value" if given else ("add a stimulus_id column (letters, digits, _ . -) "
                                             "or rename the file")
        raise DataError(f"stimulus id {sid!r} from {how} is not allowed (ASCII letters, digits, "
                        f"_ . - only); {fix}", file=csv, row=row,
                        field="stimulus_id" if given else "file")
    if sid in seen:
        fix = "make the stimulus_id values unique" if given else (
            "add a stimulus_id column with a unique id per row, or rename one of the files")
        raise DataError(f"stimulus id {sid!r} from {how} is also that of row {seen[sid]} (the same "
                        f"file name in two sub-folders?); {fix}", file=csv, row=row,
                        field="stimulus_id" if given else "file")
    seen[sid] = row
    return sid


def _manifest_rows(meta: pl.DataFrame, images_dir: Path, csv: Path, study: StudyParams,
                   source: str, max_pixels: int) -> tuple[list[dict], list[bytes], list[dict]]:
    """Manifest rows, the bytes to store per row, and the conversions made (original modes)."""
    rows, blobs, conversions, seen = [], [], [], {}
    for i, rec in enumerate(meta.iter_rows(named=True), start=1):
        for col in REQUIRED:
            if rec[col] is None or not str(rec[col]).strip():
                raise DataError("empty value", file=csv, row=i, field=col)
        for col in (*REQUIRED, "stimulus_id"):
            check_no_formula(rec.get(col), file=csv, row=i, field=col)
        rel = _safe_relative(rec["file"].strip(), file=csv, row=i)
        src = resolve_inside(images_dir, rel, file=csv, row=i)
        emotion = rec["emotion"].strip().lower()
        if emotion not in study.emotions:
            raise DataError(f"unknown emotion {rec['emotion']!r} (study emotions: "
                            f"{', '.join(study.emotions)})", file=csv, row=i, field="emotion")
        sid = _derived_id(rec, rel, seen, csv=csv, row=i)
        img = check_image(src, max_pixels=max_pixels, file=csv, row=i)
        stored = rel.with_suffix(img.suffix) if img.converted else rel
        if img.converted:
            conversions.append({"stimulus_id": sid, "source_file": rel.as_posix(),
                                "original_mode": img.original_mode,
                                "exif_orientation": img.orientation, "stored_as": "RGB PNG"})
        rows.append({
            "stimulus_id": sid,
            "file": f"images/{stored.as_posix()}",
            "sha256": hashlib.sha256(img.data).hexdigest(),
            "emotion": emotion,
            "race": rec["race"].strip().lower(),
            "gender": rec["gender"].strip().lower(),
            "identity": rec["identity"].strip(),
            "source": source,
            "width": img.size[0],
            "height": img.size[1],
        })
        blobs.append(img.data)
    return rows, blobs, conversions


def _read_norms(norms_csv: Path, manifest: pl.DataFrame,
                conversions: list[dict] = ()) -> pl.DataFrame:
    raw = read_csv(norms_csv)
    for col in ("stimulus_id", "file"):
        if col in raw.columns:
            for i, value in enumerate(raw[col].to_list(), start=1):
                check_no_formula(value, file=norms_csv, row=i, field=col)
    if "stimulus_id" not in raw.columns and "file" in raw.columns:
        by_file = dict(zip(manifest["file"].to_list(), manifest["stimulus_id"].to_list(),
                           strict=True))
        # an image stored under another name (a CMYK JPEG now an RGB PNG) by its original name
        by_file.update({f"images/{c['source_file']}": c["stimulus_id"] for c in conversions})
        ids = []
        for i, f in enumerate(raw["file"].to_list(), start=1):
            key = f"images/{PurePosixPath((f or '').strip().replace(chr(92), '/')).as_posix()}"
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
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> pl.DataFrame:
    """Import a user's images + metadata CSV (+ norms CSV) as a stimulus set; returns the manifest.

    Images converted to RGB are listed (with their original mode) in ``conversions.csv``.
    """
    replace_set(out)  # a bad set name or target fails here, before any work
    if not images_dir.is_dir():
        raise DataError("images folder not found", file=images_dir)
    meta = read_csv(metadata_csv)
    missing = [c for c in REQUIRED if c not in meta.columns]
    if missing:
        raise DataError(f"missing column(s): {', '.join(missing)}", file=metadata_csv,
                        field=missing[0])
    if meta.height == 0:
        raise DataError("table is empty (no data rows)", file=metadata_csv)
    rows, blobs, conversions = _manifest_rows(meta, images_dir, metadata_csv, study, source,
                                              max_pixels)
    manifest = validate_manifest(pl.DataFrame(rows), study, file=metadata_csv)
    norms = _read_norms(norms_csv, manifest, conversions) if norms_csv is not None else None
    with replace_set(out) as tmp_root:
        for blob, rel in zip(blobs, manifest["file"].to_list(), strict=True):
            dst = tmp_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(blob)
        write_csv(manifest, StimulusSetPaths(tmp_root).manifest)
        if norms is not None:
            write_csv(norms, StimulusSetPaths(tmp_root).norms)
        if conversions:
            write_csv(pl.DataFrame(conversions), tmp_root / CONVERSIONS)
    return manifest
