"""Loading and validating a stimulus set (manifest + norms + image files)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from emoface.config import StudyParams
from emoface.errors import DataError
from emoface.io import atomic_dir, cast_columns, read_csv, sha256_file
from emoface.paths import StimulusSetPaths, check_set_name
from schemas import NormsSchema, manifest_schema, validate

MANIFEST_TYPES: dict[str, pl.DataType] = {
    "stimulus_id": pl.String(), "file": pl.String(), "sha256": pl.String(),
    "emotion": pl.String(), "race": pl.String(), "gender": pl.String(),
    "identity": pl.String(), "source": pl.String(), "width": pl.Int64(), "height": pl.Int64(),
}
NORMS_TYPES: dict[str, pl.DataType] = {
    "stimulus_id": pl.String(), "valence_mean": pl.Float64(), "valence_sd": pl.Float64(),
    "arousal_mean": pl.Float64(), "arousal_sd": pl.Float64(), "n_raters": pl.Int64(),
}


@dataclass(frozen=True)
class StimulusSet:
    """A validated stimulus set. ``norms`` is None where the set has no human norms."""

    paths: StimulusSetPaths
    manifest: pl.DataFrame
    norms: pl.DataFrame | None

    def image_path(self, stimulus_id: str) -> Path:
        row = self.manifest.filter(pl.col("stimulus_id") == stimulus_id)
        return self.paths.root / row["file"][0]


def replace_set(out: StimulusSetPaths):
    """The atomic swap every writer of a stimulus set uses: ``out``'s folder name must be a valid
    set name, its path may not climb (``..``), and an existing folder there is replaced only if it
    is a stimulus set (holds manifest.csv). Yields the temporary folder to build the set in; the
    name and path are checked at once (before any work), and the built set is swapped in only if
    it is complete: its manifest.csv lists every image, each present with its sha256
    (:func:`verify_built_set`). Otherwise the earlier set stays as it was."""
    check_set_name(out.root.name, field="set name")
    if ".." in out.root.parts:
        raise DataError("a stimulus set path may not contain '..'", file=out.root)
    return _build_and_swap(out)


@contextmanager
def _build_and_swap(out: StimulusSetPaths) -> Iterator[Path]:
    with atomic_dir(out.root, replaces_only="manifest.csv") as tmp:
        yield tmp
        verify_built_set(tmp, out)


def verify_built_set(tmp: Path, out: StimulusSetPaths) -> int:
    """Check a set built in ``tmp`` before it is committed as ``out``: manifest.csv there, every
    file it lists present with the recorded sha256, nothing under images/ it does not list.
    Returns the number of images; a problem is a DataError naming ``out``'s file and row."""
    built = StimulusSetPaths(tmp)
    if not built.manifest.is_file():
        raise DataError("the set was not committed: its manifest.csv was not written", file=out.manifest)
    manifest = cast_columns(read_csv(built.manifest), {"file": pl.String(), "sha256": pl.String()},
                            file=out.manifest)
    try:
        _check_files(manifest, tmp, out.manifest)
    except DataError as err:
        raise DataError(f"the set was not committed (incomplete build): {err}") from None
    listed = {str(Path(f)) for f in manifest["file"].to_list()}
    if built.images.is_dir():
        extra = sorted(str(p.relative_to(tmp)) for p in built.images.rglob("*")
                       if p.is_file() and str(p.relative_to(tmp)) not in listed)
        if extra:
            raise DataError(f"the set was not committed: {len(extra)} image(s) not in the "
                            f"manifest, e.g. {extra[0]}", file=out.manifest)
    return manifest.height


def validate_manifest(df: pl.DataFrame, study: StudyParams, *, file: Path) -> pl.DataFrame:
    """Schema-check a manifest table (emotion restricted to the study's categories)."""
    return validate(df, manifest_schema(study.emotions), file=file)


def validate_norms(norms: pl.DataFrame, manifest: pl.DataFrame, *, file: Path) -> pl.DataFrame:
    """Schema-check norms and require exactly one norms row per manifest stimulus."""
    norms = validate(norms, NormsSchema, file=file)
    known = set(manifest["stimulus_id"].to_list())
    for i, sid in enumerate(norms["stimulus_id"].to_list(), start=1):
        if sid not in known:
            raise DataError(f"stimulus_id {sid!r} is not in the manifest", file=file, row=i,
                            field="stimulus_id")
    missing = known - set(norms["stimulus_id"].to_list())
    if missing:
        raise DataError(f"no norms for {len(missing)} stimuli, e.g. {sorted(missing)[0]!r}",
                        file=file, field="stimulus_id")
    return norms


def _check_files(manifest: pl.DataFrame, root: Path, manifest_file: Path) -> None:
    for i, (rel, digest) in enumerate(manifest.select("file", "sha256").iter_rows(), start=1):
        path = root / rel
        if not path.is_file():
            raise DataError(f"image file not found: {path}", file=manifest_file, row=i,
                            field="file")
        if sha256_file(path) != digest:
            raise DataError(f"content hash does not match {path} (file changed since import)",
                            file=manifest_file, row=i, field="sha256")


def load_stimulus_set(
    paths: StimulusSetPaths, study: StudyParams, *, verify_files: bool = True
) -> StimulusSet:
    """Read and validate manifest.csv (+ norms.csv when present) and, by default, every image hash."""
    raw = read_csv(paths.manifest)
    manifest = validate_manifest(cast_columns(raw, MANIFEST_TYPES, file=paths.manifest), study,
                                 file=paths.manifest)
    if verify_files:
        _check_files(manifest, paths.root, paths.manifest)
    norms = None
    if paths.norms.exists():
        raw_norms = cast_columns(read_csv(paths.norms), NORMS_TYPES, file=paths.norms)
        norms = validate_norms(raw_norms, manifest, file=paths.norms)
    return StimulusSet(paths, manifest, norms)
