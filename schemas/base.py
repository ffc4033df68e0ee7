"""Validation that reports like a researcher needs: file, row, field."""

from __future__ import annotations

from pathlib import Path

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from emoface.errors import DataError

MAX_REPORTED = 8


def validate(
    df: pl.DataFrame,
    schema: pa.DataFrameSchema | type[pa.DataFrameModel],
    *,
    file: str | Path,
    allow_empty: bool = False,
) -> pl.DataFrame:
    """Validate ``df`` against ``schema``; raise :class:`DataError` naming file, row and field.

    Rows are reported 1-based, counting data rows only (row 1 = first line under a CSV header).
    All failures are collected (pandera's lazy mode); the first few are listed in the message.
    """
    if df.height == 0 and not allow_empty:
        raise DataError("table is empty (no data rows)", file=file)
    try:
        return schema.validate(df, lazy=True)
    except SchemaErrors as err:
        raise _to_data_error(err.failure_cases, file) from None
    except SchemaError as err:  # raised for some column-level problems even in lazy mode
        raise DataError(str(err).splitlines()[0], file=file) from None


def _to_data_error(cases: pl.DataFrame | object, file: str | Path) -> DataError:
    cases = pl.DataFrame(cases) if not isinstance(cases, pl.DataFrame) else cases
    details: list[str] = []
    first: dict[str, object] = {}
    for rec in cases.head(MAX_REPORTED).iter_rows(named=True):
        col = rec.get("column")
        idx = rec.get("index")
        check = rec.get("check")
        value = rec.get("failure_case")
        if isinstance(value, str) and len(value) > 40:  # e.g. a row of 2,304 pixel values
            value = value[:37] + "..."
        row = int(idx) + 1 if idx is not None else None
        where = f"row {row}, " if row is not None else ""
        details.append(f"{where}field '{col}': failed {check} (value {value!r})")
        if not first:
            first = {"row": row, "field": col}
    more = cases.height - len(details)
    if more > 0:
        details.append(f"... and {more} more")
    return DataError(
        "schema check failed:\n  " + "\n  ".join(details),
        file=file,
        row=first.get("row"),  # type: ignore[arg-type]
        field=first.get("field"),  # type: ignore[arg-type]
    )
