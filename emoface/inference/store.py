"""Append-safe, resumable, verified storage of predictions, logits and hidden states.

Layout (under the data folder)::

    predictions/<set>/<condition_id>/<model_slug>/current.json    the batch keys the plan expects
                                                  b0000.parquet   rows of batch 0 (validated)
                                                  b0000.npz       their logits (no pickles)
                                                  b0000.json      commit record: key, sizes, sha256
    hidden/<set>/<model_slug>/current.json, b0000.npz, b0000.json  hidden states of batch 0
    hidden/<set>/<model_slug>/layer_00.npz ... + layers.json       assembled, manifest order

A batch is a fixed slice of the manifest. Its **batch key** hashes everything that changes the
answers (condition work, model digest, prompt and parser versions, the prompt/parser/backend
source code, options, stimulus hashes, given labels) and nothing that does not (timeouts,
retries, concurrency, run ids). Its *plan key* is the same without the model digest, so a dry run
can tell stored work from outdated work without asking a model server.

The logits file is written first, the Parquet file next and the commit record last, each
atomically. A batch counts as done only when its record carries the expected key and both files
verify against it (see :mod:`emoface.inference.batchfiles`). So a run killed at any point
(kill -9 included) leaves whole batches or nothing, a damaged file is found and redone, and the
next run redoes exactly the missing, outdated or damaged batches. Readers read only the batches
``current.json`` names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from emoface.backends import ModelRef
from emoface.backends.base import GenerationOptions, StimulusInput
from emoface.errors import DataError
from emoface.inference import batchfiles
from emoface.inference.conditions import Condition
from emoface.inference.runner import LogitRecord
from emoface.io import atomic_path, sha256_file
from emoface.parsing import PARSER_VERSION
from emoface.provenance import code_version, inference_code_hash
from schemas import predictions_schema, validate
from schemas.arrays import validate_hidden, validate_logits


def model_slug(model_id: str) -> str:
    """A file-system-safe, collision-free folder name for a model id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[:60]
    return f"{safe}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


def plan_key(condition: Condition, options: GenerationOptions, stimuli: Sequence[StimulusInput],
             labels: Mapping[str, str] | None, *, model_id: str) -> str:
    """Everything that makes a batch's answers except the model digest (known offline)."""
    payload = {
        "model_id": model_id,
        "condition": condition.work().model_dump(),
        "prompt_version": condition.prompt_version,
        "parser_version": PARSER_VERSION,
        "code": inference_code_hash(ModelRef.parse(model_id).backend),
        "options": options.as_dict(),
        "stimuli": [[s.stimulus_id, s.sha256] for s in stimuli],
        "labels": [labels[s.stimulus_id] for s in stimuli] if labels is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def batch_key(condition: Condition, digest: str, options: GenerationOptions,
              stimuli: Sequence[StimulusInput], labels: Mapping[str, str] | None, *,
              model_id: str) -> str:
    """The content key of a batch: its plan key plus the model digest."""
    return key_with_digest(plan_key(condition, options, stimuli, labels, model_id=model_id), digest)


def key_with_digest(plan: str, digest: str) -> str:
    return hashlib.sha256(f"{plan}|{digest}".encode()).hexdigest()


def hidden_plan_key(prompt: str, stimuli: Sequence[StimulusInput], *, model_id: str) -> str:
    """Hidden-state batch plan key: prompt, image hashes and the backend's code."""
    payload = {"model_id": model_id, "prompt": prompt, "stimuli": [s.sha256 for s in stimuli],
               "code": inference_code_hash(ModelRef.parse(model_id).backend)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def batches(stimuli: Sequence[StimulusInput], size: int) -> list[list[StimulusInput]]:
    return [list(stimuli[i:i + size]) for i in range(0, len(stimuli), size)]


@dataclass(frozen=True)
class PredictionStore:
    root: Path  # the data folder

    def condition_dir(self, stimulus_set: str, condition_id: str, model_id: str) -> Path:
        return self.root / "predictions" / stimulus_set / condition_id / model_slug(model_id)

    @staticmethod
    def batch_file(folder: Path, index: int, suffix: str) -> Path:
        return folder / f"b{index:04d}.{suffix}"

    @staticmethod
    def sweep(folder: Path) -> int:
        """Remove temporary files a killed writer left behind (never a committed batch, nor what
        a live process is writing)."""
        from emoface.io import writer_alive

        stale = [f for f in folder.glob(".*.tmp") if not writer_alive(f)] if folder.is_dir() else []
        for f in stale:
            f.unlink(missing_ok=True)
        return len(stale)

    SUFFIXES = ("npz", "parquet")

    def check(self, folder: Path, index: int, key: str, *, checksums: bool = True
              ) -> batchfiles.BatchCheck:
        """State of one batch (done / missing / outdated / damaged) for the expected key."""
        return batchfiles.check(folder, index, key, self.SUFFIXES, checksums=checksums)

    def is_done(self, folder: Path, index: int, key: str, *, checksums: bool = True) -> bool:
        return self.check(folder, index, key, checksums=checksums).done

    @staticmethod
    def set_current(folder: Path, keys: Sequence[str]) -> bool:
        """Record which batch keys the plan expects in this folder (see batchfiles)."""
        return batchfiles.set_current(folder, keys)

    def write_batch(self, folder: Path, index: int, key: str, rows: list[dict],
                    records: list[LogitRecord], emotions: Sequence[str], *,
                    plan_key: str | None = None) -> Path:
        """Validate and commit one batch: logits, rows, then the commit record (checksums).

        Only this writes the store; computing the rows and logits is separate (``run_batch``),
        so the process that owns the store can commit batches computed elsewhere.
        """
        target = self.batch_file(folder, index, "parquet")
        code = code_version()
        df = pl.DataFrame(rows, schema_overrides={"label_source": pl.String,
                                                  "label_given": pl.String, "emotion": pl.String,
                                                  "valence": pl.Float64, "arousal": pl.Float64})
        df = df.with_columns(pl.lit(code["package_version"]).alias("emoface_version"),
                             pl.lit(code["git_commit"]).alias("code_commit"),
                             pl.lit(code["git_dirty"], pl.Boolean).alias("code_dirty"))
        validate(df, predictions_schema(emotions), file=target)
        npz = self.batch_file(folder, index, "npz")
        arrays = _logit_arrays(records)
        validate_logits(arrays, file=npz, stimulus_ids=df["stimulus_id"].to_list())
        batchfiles.begin(folder, index)
        with atomic_path(npz) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        with atomic_path(target) as tmp:
            df.with_columns(pl.lit(key).alias("batch_key")).write_parquet(tmp)
        batchfiles.commit(folder, index, key, {"npz": npz, "parquet": target}, rows=df.height,
                          plan_key=plan_key)
        return target

    def _current(self, folder: Path, what: str) -> list[int]:
        records = batchfiles.require_current(folder, self.SUFFIXES, checksums=True, what=what)
        return [r["index"] for r in records]

    def read(self, folder: Path, emotions: Sequence[str], *,
             n_batches: int | None = None) -> pl.DataFrame:
        """All rows of the current batches of one (condition, model), verified and validated.

        Only the batches ``current.json`` names are read; a missing, outdated or damaged one (its
        logits included) is an error naming it. ``n_batches``, when given, must match the plan.
        """
        indices = self._current(folder, "prediction")
        if n_batches is not None and n_batches != len(indices):
            raise DataError(f"the recorded plan has {len(indices)} batches, expected {n_batches}; "
                            "run the inference again", file=folder)
        df = pl.concat([pl.read_parquet(self.batch_file(folder, i, "parquet")) for i in indices],
                       how="diagonal").drop("batch_key")  # older batches lack served_by
        return validate(df, predictions_schema(emotions), file=folder)

    def read_logits(self, folder: Path) -> dict[str, np.ndarray]:
        """Concatenate the logits of the current batches of one (condition, model), verified."""
        indices = self._current(folder, "logit")
        parts = []
        for i in indices:  # each batch's logits validated against its own prediction rows
            npz = self.batch_file(folder, i, "npz")
            part = dict(np.load(npz, allow_pickle=False))
            rows = pl.read_parquet(self.batch_file(folder, i, "parquet"), columns=["stimulus_id"])
            validate_logits(part, file=npz, stimulus_ids=rows["stimulus_id"].to_list())
            parts.append(part)
        width = max(p["top_logprobs"].shape[1] for p in parts)
        out: dict[str, list[np.ndarray]] = {}
        for p in parts:
            for name in p:
                arr = p[name]
                if name.startswith("top_") and arr.shape[1] < width:
                    fill = {"top_ids": -1, "top_tokens": "", "top_logprobs": np.nan}[name]
                    pad = np.full((arr.shape[0], width - arr.shape[1]), fill, dtype=arr.dtype)
                    arr = np.concatenate([arr, pad], axis=1)
                out.setdefault(name, []).append(arr)
        return {k: np.concatenate(v) for k, v in out.items()}


def _logit_arrays(records: Sequence[LogitRecord]) -> dict[str, np.ndarray]:
    n = len(records)
    k = max((len(r.top_tokens) for r in records), default=0)
    ids = np.full((n, k), -1, dtype=np.int64)
    tokens = np.full((n, k), "", dtype="<U32")
    lps = np.full((n, k), np.nan, dtype=np.float64)
    for i, r in enumerate(records):
        m = len(r.top_tokens)
        ids[i, :m], lps[i, :m] = r.top_ids, r.top_logprobs
        tokens[i, :m] = [t[:32] for t in r.top_tokens]
    return {
        "stimulus_id": np.array([r.stimulus_id for r in records], dtype="<U128"),
        "field": np.array([r.field for r in records], dtype="<U16"),
        "step": np.array([r.step for r in records], dtype=np.int64),
        "top_ids": ids,
        "top_tokens": tokens,
        "top_logprobs": lps,
        "digit_logprobs": np.array([r.digit_logprobs for r in records],
                                   dtype=np.float64).reshape(n, 9),
        "digit_mass": np.array([r.digit_mass for r in records], dtype=np.float64),
        "source": np.array([r.source for r in records], dtype="<U8"),
    }


LAYERS_RECORD = "layers.json"


@dataclass(frozen=True)
class HiddenStateStore:
    root: Path  # the data folder

    SUFFIXES = ("npz",)

    def model_dir(self, stimulus_set: str, model_id: str) -> Path:
        return self.root / "hidden" / stimulus_set / model_slug(model_id)

    @staticmethod
    def set_current(folder: Path, keys: Sequence[str]) -> bool:
        return batchfiles.set_current(folder, keys)

    def write_batch(self, folder: Path, index: int, key: str, stimulus_ids: Sequence[str],
                    states: Sequence[dict[str, np.ndarray]], *, plan_key: str | None = None) -> None:
        target = batchfiles.data_file(folder, index, "npz")
        arrays = {"stimulus_id": np.array(stimulus_ids),
                  "image_pool": np.stack([s["image_pool"] for s in states]).astype(np.float16),
                  "last_token": np.stack([s["last_token"] for s in states]).astype(np.float16)}
        validate_hidden(arrays, file=target, order=list(stimulus_ids))  # finite in float16 too
        batchfiles.begin(folder, index)
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, batch_key=np.array(key), **arrays)
        batchfiles.commit(folder, index, key, {"npz": target}, rows=len(stimulus_ids),
                          plan_key=plan_key)

    def check(self, folder: Path, index: int, key: str, *, checksums: bool = True
              ) -> batchfiles.BatchCheck:
        return batchfiles.check(folder, index, key, self.SUFFIXES, checksums=checksums)

    def is_done(self, folder: Path, index: int, key: str, *, checksums: bool = True) -> bool:
        return self.check(folder, index, key, checksums=checksums).done

    def assemble(self, folder: Path, order: Sequence[str]) -> list[Path]:
        """Write ``layer_XX.npz`` (image_pool, last_token: (N, d) float16) in manifest order from
        the current, verified batches, and ``layers.json`` recording their keys and checksums."""
        records = batchfiles.require_current(folder, self.SUFFIXES, checksums=True,
                                             what="hidden-state")
        parts = []
        for r in records:
            npz = batchfiles.data_file(folder, r["index"], "npz")
            part = dict(np.load(npz, allow_pickle=False))
            validate_hidden(part, file=npz)
            parts.append(part)
        ids = np.concatenate([p["stimulus_id"] for p in parts]).tolist()
        pos = {sid: i for i, sid in enumerate(ids)}
        missing = [s for s in order if s not in pos]
        if missing:
            raise DataError(f"hidden states missing for {len(missing)} stimuli, e.g. {missing[0]}",
                            file=folder)
        idx = np.array([pos[s] for s in order])
        pool = np.concatenate([p["image_pool"] for p in parts])[idx]
        last = np.concatenate([p["last_token"] for p in parts])[idx]
        (folder / LAYERS_RECORD).unlink(missing_ok=True)
        written = []
        for layer in range(pool.shape[1]):
            target = folder / f"layer_{layer:02d}.npz"
            validate_hidden({"stimulus_id": np.array(list(order)), "image_pool": pool[:, layer],
                             "last_token": last[:, layer]}, file=target)
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, stimulus_id=np.array(list(order)), image_pool=pool[:, layer],
                             last_token=last[:, layer])
            written.append(target)
        for stale in set(folder.glob("layer_*.npz")) - set(written):
            stale.unlink()
        record = {"batch_keys": [r["key"] for r in records],
                  "files": {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
                            for p in written}}
        with atomic_path(folder / LAYERS_RECORD) as tmp:
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return written

    def layers_current(self, folder: Path, *, checksums: bool = True) -> str | None:
        """None when the layer files are assembled from the current batches and verify; else why
        not (in words)."""
        try:
            record = json.loads((folder / LAYERS_RECORD).read_text())
        except (OSError, ValueError):
            return f"no {LAYERS_RECORD} (layers not assembled)"
        if record.get("batch_keys") != batchfiles.current_keys(folder):
            return "layers were assembled from other batches than the current ones"
        for name, want in sorted(record["files"].items()):
            path = folder / name
            if not path.exists():
                return f"{name} missing"
            if path.stat().st_size != want["size"] or (checksums and sha256_file(path) != want["sha256"]):
                return f"{name} is damaged (size or checksum differs from the recorded one)"
        return None

    def read_layers(self, folder: Path, order: Sequence[str] | None = None
                    ) -> list[dict[str, np.ndarray]]:
        """The per-layer arrays, verified against ``layers.json`` and the current batches, and
        validated (a row per stimulus, finite; with ``order``, exactly these stimuli in order)."""
        why = self.layers_current(folder)
        if why is not None:
            raise DataError(f"hidden states not usable: {why}; run A9's extraction again",
                            file=folder)
        record = json.loads((folder / LAYERS_RECORD).read_text())
        layers = [dict(np.load(folder / name, allow_pickle=False))
                  for name in sorted(record["files"])]
        first = None
        for name, layer in zip(sorted(record["files"]), layers, strict=True):
            validate_hidden(layer, file=folder / name,
                            order=order if order is not None else first)
            first = first if first is not None else list(layer["stimulus_id"].astype(str))
        return layers


def store_status(root: Path, *, checksums: bool = True) -> list[dict]:
    """Every prediction and hidden-state folder under the data root: current (done), missing,
    damaged and stale batches with sizes (``emoface store status``)."""
    out = []
    for kind, pattern, suffixes in (("predictions", "predictions/*/*/*", PredictionStore.SUFFIXES),
                                    ("hidden", "hidden/*/*", HiddenStateStore.SUFFIXES)):
        for folder in sorted(p for p in root.glob(pattern) if p.is_dir()):
            st = batchfiles.folder_status(folder, suffixes, checksums=checksums)
            st["kind"] = kind
            rel = folder.relative_to(root / kind).parts
            st["stimulus_set"], st["model"] = rel[0], rel[-1]
            st["condition_id"] = rel[1] if kind == "predictions" else "hidden_states"
            if kind == "hidden" and st["planned"]:
                st["layers"] = HiddenStateStore(root).layers_current(folder, checksums=checksums)
            out.append(st)
    return out
