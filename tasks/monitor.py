"""What a researcher watching a long run sees in the Prefect UI.

- One log line per finished inference batch (:func:`batch_line`): calls, attempts, request-level
  retries, latency and tokens, read back from the batch's committed rows.
- A live progress artifact per subflow (:class:`SubflowProgress`, Prefect's progress artifact):
  the share of its batches finished, updated as each one ends.
- Tags on every flow run (:func:`run_tags`): the code commit, the selection and tier, and the DVC
  experiment name under ``dvc exp run`` (DVC sets ``DVC_EXP_NAME``); and a run name with the
  start time and a short id (:func:`run_name`), so two runs of the same tier are told apart.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from emoface.provenance import code_version


def batch_stats(rows: pl.DataFrame) -> dict:
    """Totals of one batch's rows: backend calls, attempts (requests sent), request-level retries
    (attempts beyond the first of each call), latency and tokens."""
    calls = int(rows["n_calls"].sum())
    attempts = int(rows["attempts"].sum())
    latency = float(rows["latency_s"].sum())
    return {"rows": rows.height, "calls": calls, "attempts": attempts,
            "retries": attempts - calls, "latency_s": latency,
            "latency_per_call_s": latency / calls if calls else 0.0,
            "prompt_tokens": int(rows["prompt_tokens"].sum()),
            "completion_tokens": int(rows["completion_tokens"].sum())}


def batch_line(label: str, parquet: Path, wall_s: float | None = None) -> str:
    """``<label>: 60 rows, 180 calls, 183 attempts (3 retries), latency 0.41 s/call, tokens
    12,000 in / 900 out, 4.2 s`` for the batch stored at ``parquet``."""
    s = batch_stats(pl.read_parquet(parquet, columns=[
        "n_calls", "attempts", "latency_s", "prompt_tokens", "completion_tokens"]))
    return (f"{label}: {s['rows']} rows, {s['calls']} calls, {s['attempts']} attempts "
            f"({s['retries']} {'retry' if s['retries'] == 1 else 'retries'}), latency "
            f"{s['latency_per_call_s']:.3f} s/call, tokens {s['prompt_tokens']:,} in / "
            f"{s['completion_tokens']:,} out" + (f", {wall_s:.1f} s" if wall_s is not None else ""))


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


class SubflowProgress:
    """A progress artifact (0-100 %) for one subflow, moved as its batches finish.

    ``add(n)`` raises the total when a work item's pending batches become known; ``done(n)``
    counts finished ones. Call it only inside a flow run (the artifact belongs to that run).
    """

    def __init__(self, name: str, total: int = 0) -> None:
        from prefect.artifacts import create_progress_artifact

        self.name, self.total, self.finished = name, total, 0
        self.id = create_progress_artifact(
            progress=0.0, key=f"{artifact_key(name)}-progress",
            description=f"{name}: share of inference batches finished")

    def add(self, n: int) -> None:
        self.total += n

    def done(self, n: int = 1) -> None:
        self.finished += n
        self._push()

    def complete(self) -> None:
        self.finished = self.total
        self._push(100.0)

    def _push(self, pct: float | None = None) -> None:
        from prefect.artifacts import update_progress_artifact

        if pct is None:
            pct = 100.0 * self.finished / self.total if self.total else 100.0
        what = (f"{self.finished} of {self.total} inference batches finished" if self.total
                else "no inference batch to run (all stored or none needed)")
        update_progress_artifact(artifact_id=self.id, progress=round(min(pct, 100.0), 1),
                                 description=f"{self.name}: {what}")


INVOCATION = uuid.uuid4().hex[:8]  # one per process: every flow run of this invocation shares it


def adopt_invocation(tags: list[str]) -> None:
    """Use the id of an ``invocation-<id>`` tag the caller already set (flows/ablations.py does),
    so a run carries one invocation id, in its tags and its name."""
    global INVOCATION
    for t in tags:
        if t.startswith("invocation-"):
            INVOCATION = t.removeprefix("invocation-")


def run_tags(selection: str) -> list[str]:
    """Tags for every flow run of one invocation: ``commit:<12 hex>[-dirty]``,
    ``selection:<tier complete | only A5 | priority 1>``, ``tier:<name>`` (tier selections),
    ``invocation-<id>``, and under ``dvc exp run`` ``dvc-exp:<name>``, ``dvc-baseline:<rev>``."""
    v = code_version()
    commit = v["git_commit"][:12] + ("-dirty" if v["git_dirty"] else "")
    chosen = selection.split(" | ")[0]
    out = [f"commit:{commit}", f"selection:{chosen}", f"invocation-{INVOCATION}"]
    if chosen.startswith("tier "):
        out.append(f"tier:{chosen.removeprefix('tier ')}")
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run` (dvc.org/doc/user-guide/env)
        out.append(f"dvc-exp:{os.environ['DVC_EXP_NAME']}")
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        out.append(f"dvc-baseline:{os.environ['DVC_EXP_BASELINE_REV'][:12]}")
    return out


def run_name(selection: str) -> str:
    """``tier complete | models | 2026-12-07 17:40:05Z | 1a2b3c4d``: unique per invocation."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{selection} | {stamp} | {exp or INVOCATION}"


# The progress artifact of the subflow running now (subflows run one at a time, nested in the
# flow process; batches commit in that process, so a plain stack is enough).
_stack: list[SubflowProgress] = []


class subflow_progress:  # noqa: N801 - used as a context manager
    """``with subflow_progress("A5 dark knowledge"):`` inside a flow: a progress artifact that
    :func:`expect` and :func:`finished` move; set to 100 % when the block ends without error."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> SubflowProgress:
        _stack.append(SubflowProgress(self.name))
        return _stack[-1]

    def __exit__(self, exc_type, exc, tb) -> None:
        p = _stack.pop()
        if exc_type is None:
            p.complete()
        else:
            p._push()


def expect(n: int) -> None:
    """``n`` more batches will run in the current subflow."""
    if _stack and n:
        _stack[-1].add(n)


def finished(label: str, parquet: Path | None, wall_s: float | None = None) -> None:
    """A batch finished: one INFO line in the (sub)flow run's log and the progress moved."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    if parquet is not None and parquet.exists():
        try:
            logger = get_run_logger()
        except MissingContextError:  # called outside a flow run (a library caller)
            logger = logging.getLogger("emoface.batches")
        logger.info(batch_line(label, parquet, wall_s))
    if _stack:
        _stack[-1].done(1)
