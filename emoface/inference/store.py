"""Append-safe, resumable storage of predictions, logits and hidden states.

Layout (under the data folder)::

    predictions/<set>/<condition_id>/<model_slug>/b0000.parquet   rows of batch 0 (validated)
                                                  b0000.npz       their logits (no pickles)
    hidden/<set>/<model_slug>/b0000.npz                           hidden states of batch 0
    hidden/<set>/<model_slug>/layer_00.npz ...                    assembled, manifest order

A batch is a fixed slice of the manifest. Its **batch key** hashes everything that changes the
answers (condition work, model digest, prompt and parser versions, options, stimulus hashes, given
labels) and nothing that does not (timeouts, retries, concurrency, run ids). The logits file is
written first and the Parquet file last, each atomically; a batch counts as done only when its
Parquet file exists with the expected key. So a run killed at any point (kill -9 included) leaves
whole batches or nothing, and the next run redoes exactly the missing batches.
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

from emoface.backends.base import GenerationOptions, StimulusInput
from emoface.errors import DataError
from emoface.inference.conditions import Condition
from emoface.inference.runner import LogitRecord
from emoface.io import atomic_path
from emoface.parsing import PARSER_VERSION
from schemas import predictions_schema, validate


def model_slug(model_id: str) -> str:
    """A file-system-safe, collision-free folder name for a model id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[:60]
    return f"{safe}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


def batch_key(condition: Condition, digest: str, options: GenerationOptions,
              stimuli: Sequence[StimulusInput], labels: Mapping[str, str] | None) -> str:
    payload = {
        "condition": condition.work().model_dump(),
        "prompt_version": condition.prompt_version,
        "parser_version": PARSER_VERSION,
        "model_digest": digest,
        "options": options.as_dict(),
        "stimuli": [[s.stimulus_id, s.sha256] for s in stimuli],
        "labels": [labels[s.stimulus_id] for s in stimuli] if labels is not None else None,
    }
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
        """Remove temporary files a killed writer left behind (never a committed batch)."""
        stale = list(folder.glob(".*.tmp")) if folder.is_dir() else []
        for f in stale:
            f.unlink(missing_ok=True)
        return len(stale)

    def is_done(self, folder: Path, index: int, key: str) -> bool:
        path = self.batch_file(folder, index, "parquet")
        if not path.exists():
            return False
        try:
            keys = pl.read_parquet(path, columns=["batch_key"])["batch_key"].unique().to_list()
        except Exception:  # unreadable leftovers are redone, never trusted
            return False
        return keys == [key]

    def write_batch(self, folder: Path, index: int, key: str, rows: list[dict],
                    records: list[LogitRecord], emotions: Sequence[str]) -> Path:
        """Validate and write one batch: logits first, rows (the commit marker) last."""
        target = self.batch_file(folder, index, "parquet")
        df = pl.DataFrame(rows, schema_overrides={"label_source": pl.String,
                                                  "label_given": pl.String, "emotion": pl.String,
                                                  "valence": pl.Float64, "arousal": pl.Float64})
        validate(df, predictions_schema(emotions), file=target)
        with atomic_path(self.batch_file(folder, index, "npz")) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **_logit_arrays(records))
        with atomic_path(target) as tmp:
            df.with_columns(pl.lit(key).alias("batch_key")).write_parquet(tmp)
        return target

    def read(self, folder: Path, emotions: Sequence[str], *, n_batches: int | None = None) -> pl.DataFrame:
        """All rows of one (condition, model), validated; refuses gaps when n_batches is given."""
        files = sorted(folder.glob("b*.parquet"))
        if n_batches is not None:
            have = {int(f.stem[1:]) for f in files}
            missing = sorted(set(range(n_batches)) - have)
            if missing:
                raise DataError(f"{len(missing)} batch(es) missing, first b{missing[0]:04d}; run "
                                "inference again to complete them", file=folder)
            files = [f for f in files if int(f.stem[1:]) < n_batches]
        if not files:
            raise DataError("no prediction batches found", file=folder)
        # diagonal: batches stored before the optional served_by column existed still concatenate
        df = pl.concat([pl.read_parquet(f) for f in files], how="diagonal").drop("batch_key")
        return validate(df, predictions_schema(emotions), file=folder)

    def read_logits(self, folder: Path) -> dict[str, np.ndarray]:
        """Concatenate the per-batch logits of one (condition, model)."""
        parts = [np.load(f, allow_pickle=False) for f in sorted(folder.glob("b*.npz"))]
        if not parts:
            raise DataError("no logits found", file=folder)
        width = max(p["top_logprobs"].shape[1] for p in parts)
        out: dict[str, list[np.ndarray]] = {}
        for p in parts:
            for name in p.files:
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


@dataclass(frozen=True)
class HiddenStateStore:
    root: Path  # the data folder

    def model_dir(self, stimulus_set: str, model_id: str) -> Path:
        return self.root / "hidden" / stimulus_set / model_slug(model_id)

    def write_batch(self, folder: Path, index: int, key: str, stimulus_ids: Sequence[str],
                    states: Sequence[dict[str, np.ndarray]]) -> None:
        with atomic_path(folder / f"b{index:04d}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, batch_key=np.array(key), stimulus_id=np.array(stimulus_ids),
                         image_pool=np.stack([s["image_pool"] for s in states]).astype(np.float16),
                         last_token=np.stack([s["last_token"] for s in states]).astype(np.float16))

    def is_done(self, folder: Path, index: int, key: str) -> bool:
        path = folder / f"b{index:04d}.npz"
        if not path.exists():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:
                return str(z["batch_key"]) == key
        except Exception:
            return False

    def assemble(self, folder: Path, order: Sequence[str]) -> list[Path]:
        """Write ``layer_XX.npz`` (image_pool, last_token: (N, d) float16) in manifest order."""
        parts = [np.load(f, allow_pickle=False) for f in sorted(folder.glob("b*.npz"))]
        ids = np.concatenate([p["stimulus_id"] for p in parts]).tolist()
        pos = {sid: i for i, sid in enumerate(ids)}
        missing = [s for s in order if s not in pos]
        if missing:
            raise DataError(f"hidden states missing for {len(missing)} stimuli, e.g. {missing[0]}",
                            file=folder)
        idx = np.array([pos[s] for s in order])
        pool = np.concatenate([p["image_pool"] for p in parts])[idx]
        last = np.concatenate([p["last_token"] for p in parts])[idx]
        written = []
        for layer in range(pool.shape[1]):
            target = folder / f"layer_{layer:02d}.npz"
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, stimulus_id=np.array(list(order)), image_pool=pool[:, layer],
                             last_token=last[:, layer])
            written.append(target)
        return written
