"""Rating stimuli under a condition: conversations -> parsed prediction rows + logit records.

Conversations run concurrently up to the backend's ``max_concurrency`` on the backend's
:func:`conversation_pool`, which every batch in flight against that backend shares (backend calls
are I/O-bound for servers; the mlx backend runs one at a time). Rows come back in input order.

A conversation whose call ran out of its retries is asked again after the rest of the batch
(``ROUNDS``). A batch that still fails keeps its finished conversations in memory under the
batch's content key, so the retry of that batch (Prefect's, or the same process running it again)
asks only for the conversations still missing.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from emoface import stop
from emoface.backends.base import (
    Backend,
    GenerationOptions,
    ModelInfo,
    StimulusInput,
    TransientBackendError,
    TurnResult,
)
from emoface.inference.conditions import Condition
from emoface.logits import digit_distribution, rating_step
from emoface.parsing import PARSER_VERSION, Parsed, parse_emotion, parse_rating, parse_single_shot
from emoface.prompts import conversations, single_shot_schema

RATING_FIELDS = ("valence", "arousal")

# (model id, batch key) -> stimulus id -> (row, logit records) of conversations finished by an
# attempt of that batch that failed as a whole; dropped once the batch completes
_FINISHED: dict[tuple[str, str], dict[str, tuple[dict, list]]] = {}
_FINISHED_LOCK = threading.Lock()
# a conversation whose call ran out of retries is asked again once the rest of the batch is done
ROUNDS = 2
#: threads of one backend's conversation pool at most (``max_concurrency x threads_per_slot``)
MAX_CONVERSATION_THREADS = 512


class ConversationPool:
    """The threads that run one backend's conversations, shared by every batch in flight, so a
    conversation sleeping in a retry backoff (its slot left to others) leaves a thread to a
    conversation of the same or of another batch. ``backlog``: conversations not started yet.
    Its threads end whenever no conversation is in flight (none outlives the work)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._queued = 0
        self._active = 0

    @property
    def backlog(self) -> int:
        return self._queued

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
        """``fn`` over ``items`` on the pool; results in input order."""

        def run(item: Any) -> Any:
            with self._lock:
                self._queued -= 1
            try:
                return fn(item)
            finally:
                with self._lock:
                    self._active -= 1
                    if self._active == 0 and self._pool is not None:
                        self._pool.shutdown(wait=False)
                        self._pool = None

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.size,
                                                thread_name_prefix="conversation")
            self._queued += len(items)
            self._active += len(items)
            futures = [self._pool.submit(run, i) for i in items]
        return [f.result() for f in futures]


_POOLS_LOCK = threading.Lock()


def conversation_pool(backend: Backend) -> ConversationPool | None:
    """The backend's conversation pool (made on first use, kept with the backend), or None when
    it runs one conversation at a time (then in the calling thread)."""
    size = min(MAX_CONVERSATION_THREADS,
               max(1, backend.max_concurrency) * max(1, backend.threads_per_slot))
    if size <= 1:
        return None
    with _POOLS_LOCK:
        pool = backend.__dict__.get("_conversation_pool")
        if pool is None:
            pool = backend.__dict__["_conversation_pool"] = ConversationPool(size)
    return pool


@dataclass(frozen=True)
class LogitRecord:
    """The rating step of one valence/arousal answer."""

    stimulus_id: str
    field: str
    step: int  # index of the rating step among the generated tokens; -1 if no digit was generated
    top_ids: np.ndarray
    top_tokens: list[str]
    top_logprobs: np.ndarray
    digit_logprobs: np.ndarray  # (9,), NaN = not in top-k / no rating step
    digit_mass: float
    source: str  # exact | topk | none


def _logit_record(stimulus_id: str, field: str, turn: TurnResult) -> LogitRecord:
    if field == "emotion":  # keep the label distribution of the first step; no digits here
        if not turn.steps:
            return LogitRecord(stimulus_id, field, -1, np.zeros(0, np.int64), [], np.zeros(0),
                               np.full(9, np.nan), 0.0, "none")
        s = turn.steps[0]
        return LogitRecord(stimulus_id, field, 0, np.array([t[0] for t in s.top], np.int64),
                           [t[1] for t in s.top], np.array([t[2] for t in s.top], np.float64),
                           np.full(9, np.nan), 0.0, "label")
    i = rating_step(turn.steps)
    if i is None:
        return LogitRecord(stimulus_id, field, -1, np.zeros(0, np.int64), [], np.zeros(0),
                           np.full(9, np.nan), 0.0, "none")
    step = turn.steps[i]
    dist = digit_distribution(step)
    return LogitRecord(
        stimulus_id, field, i,
        np.array([t[0] for t in step.top], dtype=np.int64),
        [t[1] for t in step.top],
        np.array([t[2] for t in step.top], dtype=np.float64),
        dist.logprobs, dist.mass, dist.source,
    )


def rate_stimulus(
    backend: Backend,
    info: ModelInfo,
    stimulus: StimulusInput,
    condition: Condition,
    emotions: Sequence[str],
    options: GenerationOptions,
    *,
    label: str | None = None,
    slot: Callable[[], AbstractContextManager] | None = None,
) -> tuple[dict, list[LogitRecord]]:
    """Run every conversation one stimulus needs and parse the answers into one row.

    ``slot`` (the backend's :meth:`~Backend.slot`) is held for each conversation's calls only,
    not while its answers are parsed, so the server gets the next conversation meanwhile."""
    parsed: dict[str, Parsed] = {}
    raw: list[dict] = []
    turns_done: list[TurnResult] = []
    records: list[LogitRecord] = []
    convs = conversations(condition.protocol, emotions, label=label)
    if not getattr(backend, "rates_dimensions", True):
        # a classifier (FER): only the emotion question; valence/arousal are not asked
        convs = [[t for t in convs[0] if t.field in ("emotion", "json")][:1]]
        parsed.update({f: Parsed(None, "not_asked") for f in RATING_FIELDS})
    for conv in convs:
        stop.check()  # an interrupted run starts no new conversation
        image_stim = stimulus if any(t.with_image for t in conv) else None
        schema = single_shot_schema() if conv[0].field == "json" else None
        with slot() if slot is not None else nullcontext():
            results = backend.converse(image_stim, conv, options, json_schema=schema)
        for turn, res in zip(conv, results, strict=True):
            raw.append({"field": turn.field, "text": res.text})
            turns_done.append(res)
            if turn.field == "json":
                parsed.update(parse_single_shot(res.text, emotions))
            elif turn.field == "emotion":
                parsed["emotion"] = parse_emotion(res.text, emotions)
                records.append(_logit_record(stimulus.stimulus_id, "emotion", res))
            else:
                parsed[turn.field] = parse_rating(res.text)
                records.append(_logit_record(stimulus.stimulus_id, turn.field, res))
    emotion = parsed.get("emotion", Parsed(None, "unparseable"))
    row = {
        "condition_id": condition.condition_id,
        "protocol": condition.protocol,
        "temperature": float(condition.temperature),
        "repeat": condition.work().repeat,
        "label_source": condition.label_source,
        "label_given": label,
        "model_id": info.model_id,
        "backend": info.backend,
        "model_digest": info.digest,
        "backend_version": info.backend_version,
        "quantization": info.quantization,
        "simulated": info.simulated,
        # which host served it; a Dask worker overwrites this with its address (inference.remote)
        "served_by": str(info.extra.get("host") or socket.gethostname()),
        "stimulus_id": stimulus.stimulus_id,
        "stimulus_sha256": stimulus.sha256,
        "prompt_version": condition.prompt_version,
        "parser_version": PARSER_VERSION,
        "options": json.dumps(options.as_dict(), sort_keys=True),
        "emotion": emotion.value if condition.protocol != "text_only" else None,
        "emotion_status": emotion.status if condition.protocol != "text_only" else "not_asked",
        **{f: parsed[f].value for f in RATING_FIELDS},
        **{f"{f}_status": parsed[f].status for f in RATING_FIELDS},
        "raw_answers": json.dumps(raw, ensure_ascii=False),
        "n_calls": len(turns_done),
        "attempts": sum(r.attempts for r in turns_done),
        "latency_s": float(sum(r.latency_s for r in turns_done)),
        "prompt_tokens": sum(r.prompt_tokens for r in turns_done),
        "completion_tokens": sum(r.completion_tokens for r in turns_done),
        "cached_tokens": sum(r.cached_tokens for r in turns_done),
    }
    return row, records


def run_batch(
    backend: Backend,
    stimuli: Sequence[StimulusInput],
    condition: Condition,
    emotions: Sequence[str],
    options: GenerationOptions,
    *,
    labels: Mapping[str, str] | None = None,
    on_done: Callable[[int], None] | None = None,
    resume_key: str | None = None,
) -> tuple[list[dict], list[LogitRecord]]:
    """Rate ``stimuli`` concurrently; rows in input order.

    With ``resume_key`` (the batch's content key), conversations finished by an earlier failed
    attempt of the same batch are reused instead of asked again.
    """
    info = backend.info
    with _FINISHED_LOCK:
        finished = _FINISHED.setdefault((info.model_id, resume_key), {}) if resume_key else {}

    def one(stim: StimulusInput):
        if stim.stimulus_id in finished:
            return finished[stim.stimulus_id]  # counted by the progress bar the first time
        label = labels[stim.stimulus_id] if labels is not None else None
        try:
            out = rate_stimulus(backend, info, stim, condition, emotions, options, label=label,
                                slot=backend.slot)
        except TransientBackendError as err:
            return err  # asked again in the next round, after the others are done
        finished[stim.stimulus_id] = out
        if on_done is not None:
            on_done(1)
        return out

    pool = conversation_pool(backend)
    results: list = []
    for _ in range(ROUNDS):
        todo = [s for s in stimuli if s.stimulus_id not in finished]
        results = [one(s) for s in todo] if pool is None or len(todo) <= 1 else pool.map(one, todo)
        if all(s.stimulus_id in finished for s in stimuli):
            break
    failed = [r for r in results if isinstance(r, TransientBackendError)]
    if failed:
        raise failed[0]  # finished conversations stay in memory for the batch's retry
    results = [finished[s.stimulus_id] for s in stimuli]
    if resume_key:
        with _FINISHED_LOCK:
            _FINISHED.pop((info.model_id, resume_key), None)
    rows = [r for r, _ in results]
    records = [rec for _, recs in results for rec in recs]
    return rows, records
