"""Schemas of the raw real-face inputs (FER-2013 CSV, AffectNet annotations) before import; what
the import writes goes through the manifest and norms schemas like any stimulus set."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

FER2013_PIXELS = 48 * 48


def _pixels(data: PolarsData) -> pl.Expr:
    return pl.col(data.key).fill_null("").str.strip_chars().str.split(" ")


class Fer2013Schema(pa.DataFrameModel):
    """FER-2013's CSV: an emotion code 0-6 and 2,304 space-separated pixel values 0-255."""

    emotion: str
    pixels: str = pa.Field(nullable=True)

    @pa.check("emotion", name="unknown emotion code (FER-2013 codes are 0-6)")
    def _code(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).str.contains(r"^\s*[0-6]\s*$")
                                     .fill_null(False))

    @pa.check("pixels", name="expected 2304 pixel values (48x48)")
    def _count(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_pixels(data).list.len() == FER2013_PIXELS)

    @pa.check("pixels", name="a pixel is not an integer 0-255")
    def _range(cls, data: PolarsData) -> pl.LazyFrame:
        ok = _pixels(data).list.eval(
            pl.element().str.contains(r"^\d{1,3}$")
            & (pl.element().cast(pl.Int64, strict=False).fill_null(999) <= 255)).list.all()
        return data.lazyframe.select(ok)


class AffectNetAnnotationsSchema(pa.DataFrameModel):
    """AffectNet's annotation CSV: an expression code or name; valence/arousal in [-1, 1] or
    empty (the path column is checked against the folder by the importer)."""

    expression: str = pa.Field(str_length={"min_value": 1})
    valence: str | None = pa.Field(nullable=True)
    arousal: str | None = pa.Field(nullable=True)

    @pa.check("valence", "arousal", name="outside [-1, 1] or not a number")
    def _in_range(cls, data: PolarsData) -> pl.LazyFrame:
        raw = pl.col(data.key).str.strip_chars()
        x = raw.cast(pl.Float64, strict=False)
        return data.lazyframe.select(
            raw.is_null() | (raw == "") | (x.is_not_null() & (x >= -1.0) & (x <= 1.0)))
