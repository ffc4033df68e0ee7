"""Schemas of the array files that reach the statistics: the digit distributions (logits NPZ) and
the hidden states (per-batch NPZ and the per-layer files A9 reads).

pandera validates tables, so each array file is checked as the table it stands for: the logits as
one row per recorded prediction step (stimulus, field, step, the 9 digit log-probabilities, digit
mass, source); the hidden states as one row per stimulus with its vector's width and whether every
value is finite. Shape and alignment rules that span two files (logits against the batch's rows,
a layer against the manifest order) are checked by :func:`logits_frame` / :func:`hidden_frame`
callers through :func:`check_aligned`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from emoface.errors import DataError
from schemas.base import validate

DIGITS = tuple(f"digit_lp_{d}" for d in range(1, 10))
LOGIT_FIELDS = ("emotion", "valence", "arousal")
LOGIT_SOURCES = ("label", "exact", "topk", "none")
LOGIT_KEYS = ("stimulus_id", "field", "step", "digit_logprobs", "digit_mass", "source")


class LogitsSchema(pa.DataFrameModel):
    """One row per (stimulus, field): the step the answer was read from (-1: none)."""

    stimulus_id: str
    field: str = pa.Field(isin=list(LOGIT_FIELDS))
    step: int = pa.Field(ge=-1)
    # log-probabilities: <= 0 (tiny float error allowed), -inf for a digit with no mass, null for
    # a step without digits (the emotion step, or no rating step found)
    digit_lp_1: float = pa.Field(nullable=True, le=1e-9)
    digit_lp_2: float = pa.Field(nullable=True, le=1e-9)
    digit_lp_3: float = pa.Field(nullable=True, le=1e-9)
    digit_lp_4: float = pa.Field(nullable=True, le=1e-9)
    digit_lp_5: float = pa.Field(nullable=True, le=1e-9)
    digit_lp_6: float = pa.Field(nullable=True, le=1e-9)
    digit_lp_7: float = pa.Field(nullable=True, le=1e-9)
    digit_lp_8: float = pa.Field(nullable=True, le=1e-9)
    digit_lp_9: float = pa.Field(nullable=True, le=1e-9)
    digit_mass: float = pa.Field(ge=0.0, le=1.0 + 1e-6)
    source: str = pa.Field(isin=list(LOGIT_SOURCES))

    class Config:
        strict = True
        unique = ["stimulus_id", "field"]

    @pa.dataframe_check(error="the 9 digit probabilities sum to more than 1")
    def mass_at_most_one(cls, data: PolarsData) -> pl.LazyFrame:
        total = pl.sum_horizontal([pl.col(c).exp() for c in DIGITS])
        return data.lazyframe.select(total.fill_null(0.0) <= 1.0 + 1e-6)


class HiddenRowsSchema(pa.DataFrameModel):
    """One row per stimulus of a hidden-state file: its vector width and finiteness."""

    stimulus_id: str = pa.Field(unique=True)
    image_pool_width: int = pa.Field(ge=1)
    last_token_width: int = pa.Field(ge=1)
    finite: bool = pa.Field(isin=[True])

    class Config:
        strict = True


def logits_frame(arrays: Mapping[str, np.ndarray], *, file: str | Path) -> pl.DataFrame:
    """The logits NPZ's per-step arrays as a table; a wrong shape is an error naming the file."""
    missing = [k for k in LOGIT_KEYS if k not in arrays]
    if missing:
        raise DataError(f"logits file lacks {', '.join(missing)}", file=file)
    lp = np.asarray(arrays["digit_logprobs"])
    n = len(arrays["stimulus_id"])
    if lp.ndim != 2 or lp.shape != (n, 9):
        raise DataError(f"digit_logprobs has shape {lp.shape}, expected ({n}, 9): one row of 9 "
                        "digit log-probabilities per prediction step", file=file)
    for k in ("field", "step", "digit_mass", "source"):
        if len(arrays[k]) != n:
            raise DataError(f"{k} has {len(arrays[k])} entries, stimulus_id {n}", file=file)
    frame = pl.DataFrame({
        "stimulus_id": np.asarray(arrays["stimulus_id"]).astype(str),
        "field": np.asarray(arrays["field"]).astype(str),
        "step": np.asarray(arrays["step"]).astype(np.int64),
        **{c: lp[:, i].astype(np.float64) for i, c in enumerate(DIGITS)},
        "digit_mass": np.asarray(arrays["digit_mass"]).astype(np.float64),
        "source": np.asarray(arrays["source"]).astype(str),
    }, schema_overrides={c: pl.Float64 for c in DIGITS})
    # NaN marks "no digits at this step" (stored as NaN in the NPZ): null for the schema
    return frame.with_columns([pl.col(c).fill_nan(None) for c in (*DIGITS, "digit_mass")])


def validate_logits(arrays: Mapping[str, np.ndarray], *, file: str | Path,
                    stimulus_ids: Sequence[str] | None = None) -> pl.DataFrame:
    """Validate one batch's logits; with ``stimulus_ids`` (the batch's prediction rows), every
    step must belong to a row and every row must have its steps (aligned with the predictions).
    A batch with no logit records (single-shot JSON, a backend without log-probabilities) passes."""
    frame = validate(logits_frame(arrays, file=file), LogitsSchema, file=file, allow_empty=True)
    if stimulus_ids is not None and frame.height:
        check_aligned(frame["stimulus_id"].unique().to_list(), stimulus_ids, file=file,
                      what="logit steps", other="prediction rows", ordered=False)
    return frame


def hidden_frame(arrays: Mapping[str, np.ndarray], *, file: str | Path) -> pl.DataFrame:
    """A hidden-state file (per batch: (n, layers, d); per layer: (n, d)) as one row per
    stimulus: widths and finiteness. A row count that differs from stimulus_id is an error."""
    for k in ("stimulus_id", "image_pool", "last_token"):
        if k not in arrays:
            raise DataError(f"hidden-state file lacks {k}", file=file)
    ids = np.asarray(arrays["stimulus_id"]).astype(str)
    pool, last = np.asarray(arrays["image_pool"]), np.asarray(arrays["last_token"])
    for name, arr in (("image_pool", pool), ("last_token", last)):
        if arr.ndim not in (2, 3) or arr.shape[0] != len(ids):
            raise DataError(f"{name} has shape {arr.shape}: expected {len(ids)} rows, one per "
                            "stimulus_id (file misaligned)", file=file)
    if pool.ndim != last.ndim or pool.shape[1:-1] != last.shape[1:-1]:
        raise DataError(f"image_pool {pool.shape} and last_token {last.shape} disagree in layers",
                        file=file)
    flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
    return pl.DataFrame({
        "stimulus_id": ids,
        "image_pool_width": np.full(len(ids), pool.shape[-1], np.int64),
        "last_token_width": np.full(len(ids), last.shape[-1], np.int64),
        "finite": np.isfinite(flat(pool).astype(np.float32)).all(axis=1)
        & np.isfinite(flat(last).astype(np.float32)).all(axis=1),
    })


def validate_hidden(arrays: Mapping[str, np.ndarray], *, file: str | Path,
                    order: Sequence[str] | None = None) -> pl.DataFrame:
    """Validate a hidden-state file; with ``order`` its stimuli must be exactly these, in order."""
    frame = validate(hidden_frame(arrays, file=file), HiddenRowsSchema, file=file)
    if order is not None:
        check_aligned(frame["stimulus_id"].to_list(), order, file=file, what="hidden states",
                      other="the manifest", ordered=True)
    return frame


def check_aligned(ids: Sequence[str], expected: Sequence[str], *, file: str | Path, what: str,
                  other: str, ordered: bool) -> None:
    if ordered and list(ids) == list(expected):
        return
    extra, missing = set(ids) - set(expected), set(expected) - set(ids)
    if extra or missing:
        example = sorted(extra)[0] if extra else sorted(missing)[0]
        raise DataError(f"{what} not aligned with {other}: {len(extra)} extra, {len(missing)} "
                        f"missing (e.g. {example})", file=file)
    if ordered:
        first = next(i for i, (a, b) in enumerate(zip(ids, expected, strict=True)) if a != b)
        raise DataError(f"{what} not in {other}'s order: row {first + 1} is {ids[first]}, "
                        f"expected {expected[first]}", file=file)
