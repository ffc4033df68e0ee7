"""Schemas of the exported answer tables (``emoface results export``): what a co-author's R or
SPSS script may rely on."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from schemas.predictions import EMOTION_STATUSES, LABEL_SOURCES, PROTOCOLS, ROW_SOURCES

_SHA = r"^[0-9a-f]{64}$"


class AnswersExportSchema(pa.DataFrameModel):
    """answers.{csv,parquet}: one row per (stimulus_set, model_id, condition_id, stimulus_id)."""

    stimulus_set: str
    model_id: str = pa.Field(str_matches=r"^[a-z]+/.+")
    condition_id: str
    protocol: str = pa.Field(isin=list(PROTOCOLS))
    temperature: float = pa.Field(ge=0.0, le=2.0)
    repeat: int = pa.Field(ge=1)
    label_source: str = pa.Field(nullable=True, isin=list(LABEL_SOURCES))
    label_given: str = pa.Field(nullable=True)
    stimulus_id: str
    stimulus_file: str
    stimulus_sha256: str = pa.Field(str_matches=_SHA)
    intended_emotion: str
    race: str
    gender: str
    identity: str
    image_source: str
    emotion: str = pa.Field(nullable=True)
    emotion_status: str = pa.Field(isin=list(EMOTION_STATUSES))
    valence: float = pa.Field(nullable=True, ge=1.0, le=9.0)
    valence_status: str = pa.Field(isin=list(EMOTION_STATUSES))
    arousal: float = pa.Field(nullable=True, ge=1.0, le=9.0)
    arousal_status: str = pa.Field(isin=list(EMOTION_STATUSES))
    usable_emotion: bool
    correct: bool
    raw_emotion: str = pa.Field(nullable=True)
    raw_valence: str = pa.Field(nullable=True)
    raw_arousal: str = pa.Field(nullable=True)
    raw_json: str = pa.Field(nullable=True)
    human_valence_mean: float = pa.Field(nullable=True, ge=1.0, le=9.0)
    human_valence_sd: float = pa.Field(nullable=True, ge=0.0, le=4.0)
    human_arousal_mean: float = pa.Field(nullable=True, ge=1.0, le=9.0)
    human_arousal_sd: float = pa.Field(nullable=True, ge=0.0, le=4.0)
    human_n_raters: int = pa.Field(nullable=True, ge=1)
    simulated: bool
    source: str = pa.Field(isin=list(ROW_SOURCES))
    source_file: str = pa.Field(nullable=True)
    source_sha256: str = pa.Field(nullable=True, str_matches=_SHA)
    mapping_sha256: str = pa.Field(nullable=True, str_matches=_SHA)
    backend: str
    model_digest: str
    backend_version: str
    quantization: str
    served_by: str = pa.Field(nullable=True)
    prompt_version: str
    parser_version: str
    options: str
    n_calls: int = pa.Field(ge=1)
    attempts: int = pa.Field(ge=1)
    latency_s: float = pa.Field(ge=0.0)
    prompt_tokens: int = pa.Field(ge=0)
    completion_tokens: int = pa.Field(ge=0)
    cached_tokens: int = pa.Field(ge=0)
    emoface_version: str
    code_commit: str
    code_dirty: bool = pa.Field(nullable=True)

    @pa.dataframe_check(name="one_row_per_set_model_condition_stimulus")
    @classmethod
    def _unique(cls, data: PolarsData) -> pl.LazyFrame:
        keys = ["stimulus_set", "model_id", "condition_id", "stimulus_id"]
        return data.lazyframe.select(~pl.struct(keys).is_duplicated())

    @pa.dataframe_check(name="imported_rows_name_their_source")
    @classmethod
    def _imported(cls, data: PolarsData) -> pl.LazyFrame:
        imported = pl.col("source") == "imported"
        named = pl.all_horizontal([pl.col(c).is_not_null() for c in
                                   ("source_file", "source_sha256", "mapping_sha256")])
        return data.lazyframe.select(~imported | named)

    class Config:
        strict = True
        ordered = True


class DigitsExportSchema(pa.DataFrameModel):
    """digits.{csv,parquet}: one row per (set, model, condition, stimulus, field, digit)."""

    stimulus_set: str
    model_id: str = pa.Field(str_matches=r"^[a-z]+/.+")
    condition_id: str
    stimulus_id: str
    field: str = pa.Field(isin=["valence", "arousal"])
    step: int = pa.Field(ge=0)
    digit: int = pa.Field(ge=1, le=9)
    logprob: float = pa.Field(nullable=True, le=0.0)
    probability: float = pa.Field(nullable=True, ge=0.0, le=1.0)
    digit_mass: float = pa.Field(ge=0.0, le=1.0 + 1e-9)
    digit_source: str = pa.Field(isin=["exact", "topk"])
    simulated: bool

    @pa.dataframe_check(name="one_row_per_step_digit")
    @classmethod
    def _unique(cls, data: PolarsData) -> pl.LazyFrame:
        keys = ["stimulus_set", "model_id", "condition_id", "stimulus_id", "field", "digit"]
        return data.lazyframe.select(~pl.struct(keys).is_duplicated())

    class Config:
        strict = True
        ordered = True


def answers_export_schema(emotions: Sequence[str]) -> pa.DataFrameSchema:
    """The answers schema with usable emotions and intended emotions in the study's set."""
    schema = copy.deepcopy(AnswersExportSchema.to_schema())
    allowed = list(emotions)

    def _in_set(data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.col("usable_emotion") | pl.col("emotion").is_in(allowed))

    schema.checks = [*schema.checks, pa.Check(_in_set, name="usable_emotion_in_study_set")]
    return schema


def digits_export_schema() -> pa.DataFrameSchema:
    return DigitsExportSchema.to_schema()
