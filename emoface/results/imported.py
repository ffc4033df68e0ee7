"""The record an import leaves in a (condition, model) folder, and what the planner asks of it.

``imported.json`` (written before the batches) names the sources (every file read, with its
SHA-256), the mapping's SHA-256, and for each batch its plan key (what the pipeline would plan
for that slice of the stimulus set) and its batch key (the plan key + the sources). The planner
(:func:`emoface.inference.engine.plan_condition`) uses the imported keys instead of asking the
backend: a folder that holds an import never calls a model. It refuses, in one line, when

* the plan changed since the import (stimulus set, batch size, options, prompt/parser code): the
  plan keys differ;
* a source file still at its recorded path changed (its SHA-256 differs): the imported answers
  are stale;
* a batch the import wrote is missing, outdated or damaged (an interrupted import).

Each says to run ``emoface results import`` again. A source file that was moved away is not
checked (the store's own checksums still guard the imported batches).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from emoface.backends import ModelRef
from emoface.backends.base import Backend, ModelInfo, PermanentBackendError
from emoface.errors import DataError, EmofaceError
from emoface.inference import batchfiles
from emoface.io import sha256_file

RECORD = "imported.json"
SUFFIXES = ("npz", "parquet")  # PredictionStore.SUFFIXES (not imported: no cycle with the store)


def read_record(folder: Path) -> dict | None:
    try:
        rec = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "keys" in rec and "plan_keys" in rec else None


def stale_source(record: dict) -> str | None:
    """The first recorded source file that changed since the import, or None."""
    for src in record.get("sources", []):
        p = Path(src["path"])
        if p.is_file() and sha256_file(p) != src["sha256"]:
            return str(p)
    return None


def imported_keys(folder: Path, plan_keys: Sequence[str]) -> list[str] | None:
    """The batch keys of an import in ``folder`` for the current plan; None when the folder holds
    no import. A DataError (one line, what to do) when the import cannot stand for the plan."""
    rec = read_record(folder)
    if rec is None:
        return None
    again = "run emoface results import again (or remove the folder to run the model instead)"
    if list(rec["plan_keys"]) != list(plan_keys):
        raise DataError("imported answers were made for another plan (the stimulus set, "
                        "inference.batch_size, the condition's options or the prompt/parser code "
                        f"changed since the import); {again}", file=folder / RECORD)
    changed = stale_source(rec)
    if changed is not None:
        raise DataError(f"the imported answers are stale: {changed} changed since it was imported "
                        f"(SHA-256 differs); {again}", file=folder / RECORD)
    for i, key in enumerate(rec["keys"]):
        c = batchfiles.check(folder, i, key, SUFFIXES, checksums=False)
        if not c.done:
            raise DataError(f"imported batch b{i:04d} is {c.state} ({c.detail}); {again}",
                            file=c.path)
    return list(rec["keys"])


def imported_models(data_root: Path) -> set[str]:
    """Model ids with imported answers anywhere in the data folder's store."""
    out = set()
    for rec_file in (data_root / "predictions").glob(f"*/*/*/{RECORD}"):
        rec = read_record(rec_file.parent)
        if rec is not None and rec.get("model_id"):
            out.add(rec["model_id"])
    return out


def build_or_stand_in(model_id: str, build, data_root: Path):
    """The model's backend, or, where it cannot be built or asked for its model info here (the
    extra not installed, the weights or the server absent) and the model has imported answers,
    an :class:`ImportedModel` that stands in for it: the planner reads the imported batches
    without a call, and any batch that still needs the model fails naming it."""
    if model_id not in imported_models(data_root):
        return build()  # as before: nothing imported, nothing to stand in for
    try:
        backend = build()
        backend.info  # noqa: B018 - a server or the weights answer here, or not
        return backend
    except EmofaceError as err:
        return ImportedModel(model_id, why=str(err))


class ImportedModel(Backend):
    """Stands in for a model whose answers were imported and which cannot run here."""

    def __init__(self, model_id: str, *, why: str) -> None:
        ref = ModelRef.parse(model_id)
        backend, model = ref.backend, ref.name
        self.why = why
        self._info = ModelInfo(model_id=model_id, backend=backend, model=model,
                               digest="unknown (imported)", backend_version="unknown (imported)",
                               quantization="unknown", simulated=backend == "simulated")

    @property
    def info(self) -> ModelInfo:
        return self._info

    def converse(self, stimulus, turns, options, *, json_schema=None):
        raise PermanentBackendError(
            f"{self._info.model_id} has only imported answers here and cannot run ({self.why}); "
            "import this condition too, or install/start the model")
