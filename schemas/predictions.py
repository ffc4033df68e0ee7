"""Schema of the predictions table: one row per (condition, model, stimulus, repeat)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Optional

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from emoface.parsing import STATUSES

EMOTION_STATUSES = (*STATUSES, "not_asked")
PROTOCOLS = ("context_carry", "single_shot", "text_only")
ROW_SOURCES = ("native", "imported")
# emoface.inference.conditions.LabelSource's values, restated: the schemas import nothing of
# emoface.inference (so the stimuli stage's DVC deps stay small); a test checks they agree
LABEL_SOURCES = ("baseline", "intended")


class PredictionsSchema(pa.DataFrameModel):
    condition_id: str
    protocol: str = pa.Field(isin=list(PROTOCOLS))
    temperature: float = pa.Field(ge=0.0, le=2.0)
    repeat: int = pa.Field(ge=1)
    label_source: str = pa.Field(nullable=True, isin=list(LABEL_SOURCES))
    label_given: str = pa.Field(nullable=True)
    model_id: str = pa.Field(str_matches=r"^[a-z]+/.+")
    backend: str
    model_digest: str
    backend_version: str
    quantization: str
    simulated: bool
    # the host that served the row (Ollama URL / Dask worker address); optional so batches stored
    # before the column existed still read
    served_by: Optional[str] = pa.Field(nullable=True)  # noqa: UP045 - pandera reads Optional
    stimulus_id: str
    stimulus_sha256: str = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    prompt_version: str
    parser_version: str
    options: str
    emotion: str = pa.Field(nullable=True)
    emotion_status: str = pa.Field(isin=list(EMOTION_STATUSES))
    valence: float = pa.Field(nullable=True, ge=1.0, le=9.0)
    valence_status: str = pa.Field(isin=list(EMOTION_STATUSES))
    arousal: float = pa.Field(nullable=True, ge=1.0, le=9.0)
    arousal_status: str = pa.Field(isin=list(EMOTION_STATUSES))
    raw_answers: str
    n_calls: int = pa.Field(ge=1)
    attempts: int = pa.Field(ge=1)
    latency_s: float = pa.Field(ge=0.0)
    prompt_tokens: int = pa.Field(ge=0)
    completion_tokens: int = pa.Field(ge=0)
    cached_tokens: int = pa.Field(ge=0)
    # where the answer came from: "native" (asked by this pipeline) or "imported" (`emoface
    # results import`: the source file, its sha256 and the mapping file's sha256). Optional so
    # batches stored before these columns existed still read (absent = native).
    source: Optional[str] = pa.Field(nullable=True, isin=list(ROW_SOURCES))  # noqa: UP045
    source_file: Optional[str] = pa.Field(nullable=True)  # noqa: UP045
    source_sha256: Optional[str] = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{64}$")  # noqa: UP045
    mapping_sha256: Optional[str] = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{64}$")  # noqa: UP045
    # the code that made the row: package version, git commit, uncommitted changes (None: no git)
    emoface_version: str
    code_commit: str
    code_dirty: bool = pa.Field(nullable=True)

    @pa.dataframe_check(name="one_row_per_condition_model_stimulus_repeat")
    @classmethod
    def _unique(cls, data: PolarsData) -> pl.LazyFrame:
        keys = ["condition_id", "model_id", "stimulus_id", "repeat"]
        return data.lazyframe.select(~pl.struct(keys).is_duplicated())

    @pa.dataframe_check(name="usable_value_iff_usable_status")
    @classmethod
    def _status_matches_value(cls, data: PolarsData) -> pl.LazyFrame:
        ok = pl.lit(["ok", "normalised"])
        conds = [
            pl.col(f).is_not_null() == pl.col(f"{f}_status").is_in(ok)
            for f in ("valence", "arousal")
        ]
        return data.lazyframe.select(pl.all_horizontal(conds))

    class Config:
        strict = True


def predictions_schema(emotions: Sequence[str]) -> pa.DataFrameSchema:
    """Predictions with usable emotions restricted to the study's categories.

    An emotion answered outside the set is kept with status ``out_of_set``.
    """
    schema = copy.deepcopy(PredictionsSchema.to_schema())
    allowed = list(emotions)

    def _in_set(data: PolarsData) -> pl.LazyFrame:
        usable = pl.col("emotion_status").is_in(["ok", "normalised"])
        return data.lazyframe.select(~usable | pl.col("emotion").is_in(allowed))

    schema.checks = [*schema.checks, pa.Check(_in_set, name="usable_emotion_in_study_set")]
    return schema
