"""Crash-safe file writes and validated table reads.

Every write goes to a temporary file in the same folder and is renamed into place (``os.replace``
is atomic on POSIX), so a reader never sees half a file and a crash leaves the old file intact.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from emoface.errors import DataError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_csv(df: pl.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        df.write_csv(tmp)


def write_parquet(df: pl.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        df.write_parquet(tmp)


def write_bytes(data: bytes, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling; swap it in for ``target`` only if the block succeeds.

    If anything fails, ``target`` (when it existed) is left exactly as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_csv(path: Path, *, schema_overrides: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Read a CSV with every column as text unless overridden; missing/broken files name the file."""
    if not path.is_file():
        raise DataError("file not found", file=path)
    try:
        return pl.read_csv(path, infer_schema=False, schema_overrides=schema_overrides)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot be read as CSV: {err}", file=path) from None


def cast_columns(df: pl.DataFrame, types: dict[str, pl.DataType], *, file: Path) -> pl.DataFrame:
    """Cast text columns to ``types``; a value that does not convert is reported by row and field."""
    missing = [c for c in types if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s): {', '.join(missing)}", file=file, field=missing[0])
    out = []
    for name, dtype in types.items():
        col = df[name]
        cast = col.cast(dtype, strict=False)
        bad = (cast.is_null() & col.is_not_null()) | col.is_null()
        if bad.any():
            row = int(bad.arg_max()) + 1  # type: ignore[operator]
            raise DataError(
                f"expected {dtype} but got {col[row - 1]!r}", file=file, row=row, field=name
            )
        out.append(cast)
    extra = [df[c] for c in df.columns if c not in types]
    return pl.DataFrame(out + extra)
