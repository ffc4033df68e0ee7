"""Crash-safe file writes and validated table reads.

Every write goes to a temporary file in the same folder and is renamed into place (``os.replace``
is atomic on POSIX), so a reader never sees half a file and a crash leaves the old file intact.
Temporary names start with ``.``, carry the writer's PID (``.NAME.pidPID.XXXX.tmp``) and end with
``.tmp`` (:func:`sweep_temporaries` removes what a killed writer left behind, never what a live one
is writing). Files and folders get the permissions the process's umask gives any
other new file (``mkstemp``/``mkdtemp`` alone would make them private: 0600 / 0700).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import polars as pl

from emoface.errors import DataError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@cache
def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting and restoring it
    os.umask(mask)
    return mask


def _honour_umask(path: Path, *, folder: bool) -> None:
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.pid{os.getpid()}."


_OWNER = re.compile(r"\.(?:pid|old-)(\d+)(?:\.|$)")


def writer_alive(path: Path) -> bool:
    """Whether the process that made this temporary (``.NAME.pidPID.XXXX.tmp``) or set-aside
    (``.NAME.old-PID``) path is still running on this machine: then it is still being written
    (or swapped) and must be left alone. Names without a PID (older versions) count as dead."""
    from emoface.runlock import pid_alive

    owners = _OWNER.findall(path.name[1:])
    return bool(owners) and pid_alive(int(owners[-1]))


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    _honour_umask(Path(tmp), folder=False)
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
def atomic_dir(target: Path, *, replaces_only: str | None = None) -> Iterator[Path]:
    """Build a folder in a temporary sibling; swap it in for ``target`` only if the block succeeds.

    If anything fails, ``target`` (when it existed) is left exactly as it was. With
    ``replaces_only="manifest.csv"`` an existing ``target`` is replaced only if it holds that file
    (so a folder that is not what we wrote is never deleted); a symlinked ``target`` is refused.
    """
    if target.is_symlink() or (replaces_only is not None and target.exists()
                               and not (target / replaces_only).is_file()):
        raise DataError(f"refusing to replace {target}: it is not a folder this program wrote "
                        f"(no {replaces_only}) or it is a symbolic link; choose another name",
                        file=target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target), suffix=".tmp", dir=target.parent))
    _honour_umask(tmp, folder=True)
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


def sweep_temporaries(folders: Iterable[Path]) -> int:
    """Remove the temporary files and folders (``.*.tmp``) a killed writer left in ``folders`` and
    below; returns how many. Never touches a committed file, nor anything whose writer is still
    running (:func:`writer_alive`): a folder set aside by :func:`atomic_dir` (``.NAME.old-PID``)
    whose replacement never arrived is moved back."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob(".*.old-[0-9]*")):
            if writer_alive(path):
                continue  # its writer is between the two renames of the swap
            target = path.with_name(path.name[1:].rsplit(".old-", 1)[0])
            if not target.exists():
                os.replace(path, target)  # killed between the two renames: restore the old set
            else:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        for path in sorted(folder.rglob(".*.tmp")):
            if not (path.exists() or path.is_symlink()):
                continue  # inside a temporary folder removed just before
            if writer_alive(path) or any(writer_alive(p) for p in path.parents
                                         if p.name.endswith(".tmp")):
                continue  # a live process is writing it
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed


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
