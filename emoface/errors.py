"""Errors a researcher sees. Each names the file, and where known the row and field."""

from __future__ import annotations

from pathlib import Path


class EmofaceError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(EmofaceError):
    """params.yaml (or a config object) is invalid; the message names the key."""


class DataError(EmofaceError):
    """An input table or file is invalid.

    ``row`` is the 1-based data row (the header is not counted), so row 1 is the first line under
    the header of a CSV file.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        where = []
        if self.file is not None:
            where.append(self.file)
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
