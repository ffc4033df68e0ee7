"""Schemas of the stimulus manifest and the human norms."""

from __future__ import annotations

from collections.abc import Sequence

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

# synthetic_demo: a stand-in "real-face" set rendered by the generator in a dataset's format, so the
# A7 code path runs offline; never to be reported as real faces.
MANIFEST_SOURCES = ("synthetic", "synthetic_demo", "user", "fer2013", "affectnet")
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
# An absolute path (POSIX or Windows drive) or any '..' component escapes the set's folder.
_ESCAPE = r"^(/|\\|[A-Za-z]:)|(^|[/\\])\.\.([/\\]|$)"


class ManifestSchema(pa.DataFrameModel):
    """One row per stimulus image. ``file`` is relative to the stimulus set's folder."""

    stimulus_id: str = pa.Field(unique=True, str_matches=_ID)
    file: str = pa.Field(unique=True, str_length={"min_value": 1})
    sha256: str = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    emotion: str = pa.Field(str_length={"min_value": 1})
    race: str = pa.Field(str_length={"min_value": 1})
    gender: str = pa.Field(str_length={"min_value": 1})
    identity: str = pa.Field(str_matches=_ID)
    source: str = pa.Field(isin=list(MANIFEST_SOURCES))
    width: int = pa.Field(gt=0)
    height: int = pa.Field(gt=0)

    @pa.check("file", name="path_inside_stimulus_folder")
    @classmethod
    def _inside(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.col(data.key).str.contains(_ESCAPE))

    class Config:
        strict = True
        ordered = True


class NormsSchema(pa.DataFrameModel):
    """Human norms per image: mean and SD (ddof=1) of valence and arousal ratings on 1-9."""

    stimulus_id: str = pa.Field(unique=True, str_matches=_ID)
    valence_mean: float = pa.Field(ge=1.0, le=9.0)
    valence_sd: float = pa.Field(ge=0.0, le=4.0)
    arousal_mean: float = pa.Field(ge=1.0, le=9.0)
    arousal_sd: float = pa.Field(ge=0.0, le=4.0)
    n_raters: int = pa.Field(ge=1)

    class Config:
        strict = True
        ordered = True


def manifest_schema(emotions: Sequence[str]) -> pa.DataFrameSchema:
    """The manifest schema with ``emotion`` restricted to the study's categories."""
    schema = ManifestSchema.to_schema()
    col = schema.columns["emotion"]
    return schema.update_column(
        "emotion", checks=[*col.checks, pa.Check.isin(list(emotions))]
    )
