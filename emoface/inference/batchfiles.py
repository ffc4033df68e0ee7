"""Commit records, the per-folder list of current batches, verification, status and pruning.

A folder of batches (one (condition, model) of predictions, or one model's hidden states) holds:

* ``bNNNN.<suffix>`` data files (``parquet`` + ``npz`` for predictions, ``npz`` for hidden states),
  each written atomically;
* ``bNNNN.json``, the batch's **commit record**, written last: its batch key, its row count and
  the size and SHA-256 of every data file. A batch is done only when its record names the key the
  plan expects and every file exists with the recorded size (and checksum, when asked);
* ``current.json``: the batch keys the latest plan expects, by index, written atomically when
  the plan changes. Readers read exactly these batches; any other batch file is *stale*
  (left over from an earlier batch size, seed, model digest, ...) and ``emoface store prune``
  removes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emoface.errors import DataError
from emoface.io import atomic_path, sha256_file
from emoface.provenance import code_version

CURRENT = "current.json"
BATCH_FILE = re.compile(r"^b(\d{4,})\.(\w+)$")
STATES = ("done", "missing", "outdated", "damaged")


def data_file(folder: Path, index: int, suffix: str) -> Path:
    return folder / f"b{index:04d}.{suffix}"


def record_file(folder: Path, index: int) -> Path:
    return data_file(folder, index, "json")


def _write_json(path: Path, obj: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def begin(folder: Path, index: int) -> None:
    """Withdraw a batch's old commit record before its files are replaced, so a crash between
    the data files and the new record can never pair an old record with new files."""
    record_file(folder, index).unlink(missing_ok=True)


def commit(folder: Path, index: int, key: str, files: Mapping[str, Path], *, rows: int,
           plan_key: str | None = None) -> dict:
    """Write the commit record of a batch whose data files are already in place."""
    record = {
        "index": index, "key": key, "plan_key": plan_key, "rows": rows,
        "files": {suffix: {"size": p.stat().st_size, "sha256": sha256_file(p)}
                  for suffix, p in sorted(files.items())},
        "code": code_version(),
    }
    _write_json(record_file(folder, index), record)
    return record


def read_record(folder: Path, index: int) -> dict | None:
    """The commit record, or None when absent or unreadable (a damaged record is no commit)."""
    path = record_file(folder, index)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "key" in record and "files" in record else None


@dataclass(frozen=True)
class BatchCheck:
    """The state of one batch against the key the plan expects."""

    index: int
    state: str  # one of STATES
    detail: str
    path: Path  # the file at fault (or the record)

    @property
    def done(self) -> bool:
        return self.state == "done"


def check(folder: Path, index: int, key: str, suffixes: Sequence[str], *,
          checksums: bool) -> BatchCheck:
    """Is batch ``index`` done for ``key``? Sizes are always compared; checksums when asked."""
    record = read_record(folder, index)
    rec_path = record_file(folder, index)
    if record is None:
        present = [data_file(folder, index, s) for s in suffixes
                   if data_file(folder, index, s).exists()]
        if present:
            return BatchCheck(index, "damaged", "no commit record (an interrupted or older write)",
                              present[0])
        return BatchCheck(index, "missing", "not run yet", rec_path)
    if record["key"] != key:
        return BatchCheck(index, "outdated", "made with other inputs or code", rec_path)
    for suffix in suffixes:
        path, want = data_file(folder, index, suffix), record["files"].get(suffix)
        if want is None:
            return BatchCheck(index, "damaged", f"record lists no .{suffix} file", rec_path)
        if not path.exists():
            return BatchCheck(index, "damaged", "file missing", path)
        size = path.stat().st_size
        if size != want["size"]:
            return BatchCheck(index, "damaged", f"size {size} bytes, committed {want['size']}", path)
        if checksums and sha256_file(path) != want["sha256"]:
            return BatchCheck(index, "damaged", "checksum differs from the committed one", path)
    return BatchCheck(index, "done", "", rec_path)


def set_current(folder: Path, keys: Sequence[str]) -> bool:
    """Record the batch keys the plan expects (index = position); returns True when changed."""
    want = {"batches": [{"index": i, "key": k} for i, k in enumerate(keys)]}
    path = folder / CURRENT
    try:
        if json.loads(path.read_text()) == want:
            return False
    except (OSError, ValueError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(path, want)
    return True


def current_keys(folder: Path) -> list[str] | None:
    """The keys of the latest plan by index, or None when no plan was recorded here."""
    try:
        data = json.loads((folder / CURRENT).read_text())
        return [b["key"] for b in sorted(data["batches"], key=lambda b: b["index"])]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def require_current(folder: Path, suffixes: Sequence[str], *, checksums: bool,
                    what: str) -> list[dict]:
    """The commit records of every current batch, each verified; a DataError names the first
    batch that is missing, outdated or damaged (the next run redoes it)."""
    keys = current_keys(folder)
    if keys is None:
        raise DataError(f"no current batch list ({CURRENT}); run the inference for it first "
                        "(python flows/ablations.py ... or emoface infer)", file=folder)
    bad = [c for c in (check(folder, i, k, suffixes, checksums=checksums)
                       for i, k in enumerate(keys)) if not c.done]
    if bad:
        c = bad[0]
        raise DataError(f"{len(bad)} of {len(keys)} {what} batch(es) not usable, first "
                        f"b{c.index:04d}: {c.state} ({c.detail}); run the same inference again "
                        "to redo exactly those", file=c.path)
    return [read_record(folder, i) for i in range(len(keys))]  # type: ignore[misc]


def batch_files(folder: Path) -> dict[int, list[Path]]:
    """Every batch file (data and record) in a folder, by index."""
    out: dict[int, list[Path]] = {}
    if folder.is_dir():
        for f in folder.iterdir():
            m = BATCH_FILE.match(f.name)
            if m and f.is_file():
                out.setdefault(int(m.group(1)), []).append(f)
    return out


def folder_status(folder: Path, suffixes: Sequence[str], *, checksums: bool = True) -> dict:
    """Current / stale / damaged batches of one folder, with sizes (what ``store status`` shows).

    ``stale`` batches are files the current plan does not use (other index, or another key at a
    current index); ``damaged`` ones are current but fail verification; ``missing`` ones are
    planned and not run yet.
    """
    keys, files = current_keys(folder), batch_files(folder)
    out = {"folder": str(folder), "planned": keys is not None, "batches": len(keys or []),
           "done": 0, "missing": 0, "damaged": [], "stale": [], "done_bytes": 0, "stale_bytes": 0}
    for i, key in enumerate(keys or []):
        c = check(folder, i, key, suffixes, checksums=checksums)
        size = sum(f.stat().st_size for f in files.get(i, []))
        if c.done:
            out["done"] += 1
            out["done_bytes"] += size
        elif c.state == "missing":
            out["missing"] += 1
        elif c.state == "damaged":
            out["damaged"].append({"path": str(c.path), "detail": c.detail})
        else:  # outdated: files of another key sit at a current index until the run replaces them
            out["stale"].extend(str(f) for f in sorted(files.get(i, [])))
            out["stale_bytes"] += size
    if keys is not None:
        for i in sorted(set(files) - set(range(len(keys)))):
            out["stale"].extend(str(f) for f in sorted(files[i]))
            out["stale_bytes"] += sum(f.stat().st_size for f in files[i])
    out["temporary"] = [str(f) for f in sorted(folder.glob(".*.tmp"))] if folder.is_dir() else []
    return out


def prune(status: dict, *, dry_run: bool) -> list[Path]:
    """Remove the stale files and writers' leftovers a :func:`folder_status` found."""
    victims = [Path(p) for p in [*status["stale"], *status["temporary"]]]
    if not dry_run:
        for p in victims:
            p.unlink(missing_ok=True)
    return victims
