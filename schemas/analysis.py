"""Schemas of the frames the statistics read: one (model, condition)'s predictions joined with
the stimulus design and norms (the shared baseline frame every ablation builds on), and each
ablation's DVC headline (``data/results/<ID>/headline.json``, written and read back)."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from emoface.errors import DataError
from schemas.base import validate
from schemas.predictions import predictions_schema
from schemas.stimuli import MANIFEST_SOURCES

OUTCOMES = ("supports", "does_not_support", "cannot_tell", "definition_sensitive",
            "not_applicable", "n/a",
            # an ablation decided per temperature whose verdicts differ across temperatures
            "differs_by_temperature")


def joined_predictions_schema(emotions: Sequence[str]) -> pa.DataFrameSchema:
    """Predictions (one row per stimulus of one model and condition) + design: the intended
    emotion among the study's, race/gender/identity present, human means within 1-9 or null."""
    schema = copy.deepcopy(predictions_schema(emotions)).add_columns({
                      "intended": pa.Column(str, pa.Check.isin(list(emotions))),
                      "race": pa.Column(str, pa.Check.str_length(min_value=1)),
                      "gender": pa.Column(str, pa.Check.str_length(min_value=1)),
                      "identity": pa.Column(str, pa.Check.str_length(min_value=1)),
                      "stimulus_source": pa.Column(str, pa.Check.isin(list(MANIFEST_SOURCES))),
                      "valence_mean": pa.Column(float, pa.Check.in_range(1.0, 9.0),
                                                nullable=True),
                      "arousal_mean": pa.Column(float, pa.Check.in_range(1.0, 9.0),
                                                nullable=True),
                      # the norms' rater SD and count (the single-rater human reference)
                      "valence_sd": pa.Column(float, pa.Check.in_range(0.0, 4.0), nullable=True),
                      "arousal_sd": pa.Column(float, pa.Check.in_range(0.0, 4.0), nullable=True),
                      "n_raters": pa.Column(int, pa.Check.ge(1), nullable=True)})

    def one_row_per_stimulus(data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.col("stimulus_id").is_duplicated())

    schema.checks = [*schema.checks, pa.Check(one_row_per_stimulus, name="one_row_per_stimulus")]
    return schema


class HeadlineSchema(pa.DataFrameModel):
    """An ablation's headline: its outcome, estimate, CI and adjusted p (nulls allowed)."""

    outcome: str = pa.Field(isin=list(OUTCOMES))
    estimate: float = pa.Field(nullable=True)
    ci_low: float = pa.Field(nullable=True)
    ci_high: float = pa.Field(nullable=True)
    p_adj: float = pa.Field(nullable=True, ge=0.0, le=1.0)

    class Config:
        strict = True

    @pa.dataframe_check(error="ci_low > estimate or estimate > ci_high")
    def ci_brackets_estimate(cls, data: PolarsData) -> pl.LazyFrame:
        lo, est, hi = pl.col("ci_low"), pl.col("estimate"), pl.col("ci_high")
        ok = lo.is_null() | hi.is_null() | est.is_null() | ((lo <= est + 1e-9) & (est <= hi + 1e-9))
        return data.lazyframe.select(ok)


def headline_frame(record: dict) -> pl.DataFrame:
    return pl.DataFrame([record], schema={"outcome": pl.String, "estimate": pl.Float64,
                                          "ci_low": pl.Float64, "ci_high": pl.Float64,
                                          "p_adj": pl.Float64}, strict=False)


def validate_headline(record: dict, *, file: str | Path) -> dict:
    if sorted(record) != sorted(HeadlineSchema.to_schema().columns):
        raise DataError(f"headline keys are {sorted(record)}, expected "
                        f"{sorted(HeadlineSchema.to_schema().columns)}", file=file)
    validate(headline_frame(record), HeadlineSchema, file=file)
    return record


def read_headline(path: Path) -> dict:
    """A headline.json read back and validated (what `dvc metrics` and readers see)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the headline: {err}", file=path) from None
    return validate_headline(record, file=path)
