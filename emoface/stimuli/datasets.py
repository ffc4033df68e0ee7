"""Real-face importers (FER-2013, AffectNet) into the standard manifest, and an offline demo set.

* **FER-2013** CSV (``emotion, pixels, Usage``): ``emotion`` codes 0-6 = angry, disgust, fear,
  happy, sad, surprise, neutral; ``pixels`` = 2,304 space-separated integers 0-255 (48x48
  grayscale). Every row is checked before anything is written. No identities or valence/arousal:
  each image is its own identity, race/gender are ``unknown``, and the set has no norms (analyses
  that need norms say so).
* **AffectNet**: class folders (``<root>/<class>/<image>``, class = a name or code) or an
  annotation CSV with an image path column (``subDirectory_filePath`` or ``file``), ``expression``
  (codes 0-7 = neutral, happy, sad, surprise, fear, disgust, anger, contempt; or names), and
  optionally ``valence``/``arousal`` in [-1, 1], rescaled to the study's 1-9 scale as
  ``x_1to9 = 5 + 4 x`` (so -1 -> 1, 0 -> 5, 1 -> 9), one annotator (``n_raters = 1``, SD 0).
* Both select the study's emotions and a balanced subset of ``per_emotion`` images per emotion,
  drawn with a seed.
* :func:`write_fer2013_demo` renders synthetic faces into a FER-2013-format CSV (Usage
  ``SyntheticDemo``) so A7 runs offline; imported with ``source = synthetic_demo`` it is never
  presented as real faces.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from emoface.config import StimuliParams, StudyParams
from emoface.errors import DataError
from emoface.io import atomic_path, read_csv, write_csv
from emoface.paths import StimulusSetPaths
from emoface.stimuli.images import check_image, resolve_inside
from emoface.stimuli.importers import DEFAULT_MAX_PIXELS, _safe_relative
from emoface.stimuli.store import replace_set, validate_manifest, validate_norms

FER2013_CODES = {0: "angry", 1: "disgusted", 2: "fearful", 3: "happy", 4: "sad", 5: "surprised",
                 6: "neutral"}
AFFECTNET_CODES = {0: "neutral", 1: "happy", 2: "sad", 3: "surprised", 4: "fearful",
                   5: "disgusted", 6: "angry", 7: "contempt"}
AFFECTNET_NAMES = {"neutral": "neutral", "happy": "happy", "happiness": "happy", "sad": "sad",
                   "sadness": "sad", "surprise": "surprised", "surprised": "surprised",
                   "fear": "fearful", "fearful": "fearful", "disgust": "disgusted",
                   "disgusted": "disgusted", "anger": "angry", "angry": "angry",
                   "contempt": "contempt"}


def _balanced(labels: list[str], study: StudyParams, per_emotion: int, seed: int) -> list[int]:
    """Row indices: up to ``per_emotion`` per study emotion, drawn with ``seed``, in file order."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for emotion in study.emotions:
        idx = np.array([i for i, lab in enumerate(labels) if lab == emotion])
        if idx.size:
            chosen += rng.choice(idx, size=min(per_emotion, idx.size), replace=False).tolist()
    return sorted(chosen)


def _manifest_row(sid: str, rel: str, data: bytes, emotion: str, size: tuple[int, int],
                  source: str, identity: str | None = None) -> dict:
    return {"stimulus_id": sid, "file": rel, "sha256": hashlib.sha256(data).hexdigest(),
            "emotion": emotion, "race": "unknown", "gender": "unknown",
            "identity": identity or sid, "source": source, "width": size[0], "height": size[1]}


def _check_fer2013(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Every row through :class:`schemas.inputs.Fer2013Schema` (file, row and field named)."""
    from schemas import validate
    from schemas.inputs import Fer2013Schema

    for col in ("emotion", "pixels"):
        if col not in df.columns:
            raise DataError(f"missing column: {col}", file=path, field=col)
    df = validate(df, Fer2013Schema, file=path)
    return df.with_columns(pl.col("emotion").str.strip_chars().cast(pl.Int64).alias("code"))


def import_fer2013(csv_path: Path, out: StimulusSetPaths, study: StudyParams, *, per_emotion: int,
                   seed: int, source: str = "fer2013", usage: str | None = None) -> pl.DataFrame:
    """Import a balanced subset of a FER-2013 CSV; every row is validated first."""
    replace_set(out)  # a bad set name or target fails here, before any work
    df = _check_fer2013(read_csv(csv_path), csv_path).with_row_index("row", 1)
    if usage is not None:
        if "Usage" not in df.columns:
            raise DataError(f"real_faces.usage is {usage!r} but the CSV has no Usage column; "
                            "set usage: null or use the CSV with the Usage column",
                            file=csv_path, field="Usage")
        found = sorted(set(df["Usage"].drop_nulls().to_list()))
        df = df.filter(pl.col("Usage") == usage)
        if df.height == 0:
            raise DataError(f"no row has Usage {usage!r} (values in the file: "
                            f"{', '.join(found) or 'none'}); fix real_faces.usage",
                            file=csv_path, field="Usage")
    labels = [FER2013_CODES[c] for c in df["code"]]
    keep = _balanced(labels, study, per_emotion, seed)
    rows, blobs = [], []
    for i in keep:
        rec = df.row(i, named=True)
        px = np.array(rec["pixels"].split(), dtype=np.uint8).reshape(48, 48)
        buf = io.BytesIO()
        Image.fromarray(px, mode="L").save(buf, format="PNG", compress_level=6)
        sid = f"fer2013_{rec['row']:05d}"
        rows.append(_manifest_row(sid, f"images/{sid}.png", buf.getvalue(), labels[i], (48, 48),
                                  source))
        blobs.append(buf.getvalue())
    if not rows:
        raise DataError(f"no row has one of the study's emotions ({', '.join(study.emotions)})",
                        file=csv_path, field="emotion")
    manifest = validate_manifest(pl.DataFrame(rows), study, file=csv_path)
    with replace_set(out) as tmp:
        (tmp / "images").mkdir()
        for rec, blob in zip(rows, blobs, strict=True):
            (tmp / rec["file"]).write_bytes(blob)
        write_csv(manifest, StimulusSetPaths(tmp).manifest)
    return manifest


def _affectnet_label(value: str, *, file: Path, row: int) -> str:
    v = (value or "").strip().lower()
    if v.isdigit() and int(v) in AFFECTNET_CODES:
        return AFFECTNET_CODES[int(v)]
    if v in AFFECTNET_NAMES:
        return AFFECTNET_NAMES[v]
    if v.isdigit():
        return f"code_{v}"  # 8-10: none / uncertain / no face: never selected
    raise DataError(f"unknown expression {value!r}", file=file, row=row, field="expression")


def _rescale(value: str | None, *, file: Path, row: int, field: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        x = float(value)
    except ValueError:
        raise DataError(f"{field} {value!r} is not a number", file=file, row=row,
                        field=field) from None
    if not -1.0 <= x <= 1.0:
        raise DataError(f"{field} {x} is outside [-1, 1]", file=file, row=row, field=field)
    return 5.0 + 4.0 * x


def _visible(path: Path, root: Path) -> bool:
    """Skip hidden files and folders (``.DS_Store``, ``._x.jpg``, ``.ipynb_checkpoints``)."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def import_affectnet(root: Path, out: StimulusSetPaths, study: StudyParams, *, per_emotion: int,
                     seed: int, annotations: Path | None = None,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> pl.DataFrame:
    """Import an AffectNet-style set (class folders, or an annotation CSV) as a balanced subset.

    Hidden files are skipped; images are checked as :func:`emoface.stimuli.images.check_image`
    says (symbolic links leaving ``root`` are refused) and stored as they are, or as RGB PNG.
    """
    replace_set(out)  # a bad set name or target fails here, before any work
    if not root.is_dir():
        raise DataError("AffectNet folder not found (real_faces.path)", file=root)
    if annotations is None:
        entries = [(str(p.relative_to(root)), p.parent.name, None, None)
                   for p in sorted(root.glob("*/*")) if p.is_file() and _visible(p, root)]
        if not entries:
            raise DataError("no images found in class folders", file=root)
        recs = [(f, _affectnet_label(c, file=root, row=i), None, None)
                for i, (f, c, _, _) in enumerate(entries, 1)]
        src_file = root
    else:
        df = read_csv(annotations)
        path_col = next((c for c in ("subDirectory_filePath", "file", "pth") if c in df.columns),
                        None)
        if path_col is None or "expression" not in df.columns:
            raise DataError("needs an image path column (subDirectory_filePath or file) and "
                            "expression", file=annotations,
                            field="expression" if path_col else "file")
        from schemas import validate
        from schemas.inputs import AffectNetAnnotationsSchema

        validate(df.with_columns([pl.lit(None, pl.String).alias(c) for c in ("valence", "arousal")
                                  if c not in df.columns]),
                 AffectNetAnnotationsSchema, file=annotations)
        recs = []
        for i, r in enumerate(df.iter_rows(named=True), 1):
            label = _affectnet_label(r["expression"], file=annotations, row=i)
            v = _rescale(r.get("valence"), file=annotations, row=i, field="valence")
            a = _rescale(r.get("arousal"), file=annotations, row=i, field="arousal")
            recs.append((str(_safe_relative(r[path_col], file=annotations, row=i)), label, v, a))
        src_file = annotations
    keep = _balanced([r[1] for r in recs], study, per_emotion, seed)
    if not keep:
        raise DataError(f"no image has one of the study's emotions ({', '.join(study.emotions)})",
                        file=src_file)
    rows, norms, sources = [], [], []
    for i in keep:
        rel, label, v, a = recs[i]
        path = resolve_inside(root, rel, file=src_file, row=i + 1)
        img = check_image(path, max_pixels=max_pixels, file=src_file, row=i + 1)
        sid = f"affectnet_{hashlib.sha256(rel.encode()).hexdigest()[:12]}"
        rows.append(_manifest_row(sid, f"images/{sid}{img.suffix}", img.data, label, img.size,
                                  "affectnet"))
        sources.append(img.data)
        if v is not None and a is not None:
            norms.append({"stimulus_id": sid, "valence_mean": v, "valence_sd": 0.0,
                          "arousal_mean": a, "arousal_sd": 0.0, "n_raters": 1})
    manifest = validate_manifest(pl.DataFrame(rows), study, file=src_file)
    norms_df = validate_norms(pl.DataFrame(norms), manifest, file=src_file) \
        if len(norms) == len(rows) and norms else None
    with replace_set(out) as tmp:
        (tmp / "images").mkdir()
        for rec, blob in zip(rows, sources, strict=True):
            (tmp / rec["file"]).write_bytes(blob)
        write_csv(manifest, StimulusSetPaths(tmp).manifest)
        if norms_df is not None:
            write_csv(norms_df, StimulusSetPaths(tmp).norms)
    return manifest


def write_fer2013_demo(path: Path, study: StudyParams, stimuli: StimuliParams, *,
                       per_emotion: int) -> int:
    """Render synthetic faces (a different seed from the embedded set) into a FER-2013-format CSV:
    the face box cropped, 48x48 grayscale, Usage = SyntheticDemo. Returns the row count."""
    from emoface.backends.fer import SYNTHETIC_FACE_BOX
    from emoface.stimuli.faces import draw_face
    from emoface.stimuli.generate import plan_stimuli

    cells = len(stimuli.races) * len(stimuli.genders)
    demo = stimuli.model_copy(update={"seed": stimuli.seed + 1,
                                      "identities_per_cell": max(1, -(-per_emotion // cells))})
    plan, identities = plan_stimuli(study, demo)
    code = {v: k for k, v in FER2013_CODES.items()}
    rows, counts = [], dict.fromkeys(study.emotions, 0)
    for s in plan:
        if counts[s.emotion] >= per_emotion:
            continue
        counts[s.emotion] += 1
        img = draw_face(identities[s.identity], s.expression, stimuli.image_size)
        w, h = img.size
        box = tuple(round(f * d) for f, d in zip(SYNTHETIC_FACE_BOX, (w, h, w, h), strict=True))
        px = np.asarray(img.convert("L").crop(box).resize((48, 48), Image.Resampling.BILINEAR))
        rows.append({"emotion": code[s.emotion], "pixels": " ".join(map(str, px.ravel())),
                     "Usage": "SyntheticDemo"})
    with atomic_path(path) as tmp:
        pl.DataFrame(rows).write_csv(tmp)
    return len(rows)


def build_real_faces(params, data) -> pl.DataFrame:
    """A7's real-face set as ``params.real_faces`` says (used by the DVC stage and the flow)."""
    import tempfile

    rf = params.real_faces
    out = data.stimulus_set(rf.name)
    path = Path(rf.path)
    if rf.source == "demo":
        path = Path(tempfile.mkdtemp()) / "fer2013_demo.csv"
        write_fer2013_demo(path, params.study, params.stimuli, per_emotion=rf.per_emotion)
    if rf.format == "fer2013":
        return import_fer2013(path, out, params.study, per_emotion=rf.per_emotion, seed=rf.seed,
                              usage=rf.usage,
                              source="synthetic_demo" if rf.source == "demo" else "fer2013")
    return import_affectnet(path, out, params.study, per_emotion=rf.per_emotion, seed=rf.seed,
                            annotations=Path(rf.annotations) if rf.annotations else None,
                            max_pixels=params.stimuli.max_image_pixels)
