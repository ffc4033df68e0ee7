"""Image-major scheduling: one task covers a stimulus batch across the conditions that share its
first turn.

Baseline, A3 (every temperature and repeat), A4 and A5 all start every conversation with the same
first turn (the image and the emotion question). :func:`group_image_major` groups the batch specs
of one model that cover the same stimuli and share that first turn; :func:`run_group` rates each
stimulus under every condition of the group back to back, so a backend that keeps the first turn's
KV state (mlx) encodes and prefills the image once per image and model, and a server with a prompt
cache (Ollama) sees the same image prefix in consecutive requests. Each condition is still stored
as its own batch with its own content key; a batch already stored is skipped. Results are those of
the condition-at-a-time path (the backend is deterministic given the condition's seed). As in
``run_batch``, a conversation that ran out of its retries is asked again after the rest of the
group, and a group that still fails keeps its finished conversations for its task's retry.

The order is stable: groups in the order their first spec appears, stimuli in manifest order, and
within a stimulus the conditions in the order given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from emoface.backends.base import Backend, TransientBackendError
from emoface.inference.engine import BatchSpec
from emoface.inference.runner import (
    _FINISHED,
    _FINISHED_LOCK,
    ROUNDS,
    conversation_pool,
    rate_stimulus,
)
from emoface.inference.store import PredictionStore
from emoface.prompts import conversations


def first_turn(spec: BatchSpec, emotions: Sequence[str]) -> str | None:
    """The shared-prefix identity of a spec's conversations: the first turn's text when it carries
    the image (None for text-only conditions, which share nothing worth reusing)."""
    if spec.condition.protocol == "text_only":
        return None
    turn = conversations(spec.condition.protocol, emotions)[0][0]
    return turn.text if turn.with_image else None


def group_image_major(specs: Sequence[BatchSpec], emotions: Sequence[str]) -> list[list[BatchSpec]]:
    """Group specs that share (model, stimulus set, batch index, stimuli, first turn)."""
    groups: dict[tuple, list[BatchSpec]] = {}
    for i, s in enumerate(specs):
        ft = first_turn(s, emotions)
        key: tuple = ((s.model_id, s.stimulus_set, s.index,
                       tuple(x.stimulus_id for x in s.stimuli), ft) if ft is not None else (i,))
        groups.setdefault(key, []).append(s)
    return list(groups.values())


def run_group(backend: Backend, group: Sequence[BatchSpec], store: PredictionStore,
              emotions: Sequence[str], on_done: Callable[[int], None] | None = None) -> int:
    """Run the group's batches that are not stored yet, image-major; returns the calls made."""
    pending = [s for s in group if not store.is_done(s.folder, s.index, s.key)]
    if not pending:
        return 0
    for folder in dict.fromkeys(s.folder for s in pending):
        store.sweep(folder)
    info = backend.info
    # (batch key, stimulus id) -> (row, records): kept across rounds and across a retry of the
    # group's task, as run_batch keeps a batch's finished conversations
    with _FINISHED_LOCK:
        finished = _FINISHED.setdefault((info.model_id, tuple(s.key for s in pending)), {})

    def one_stimulus(i: int) -> TransientBackendError | None:
        """Stimulus i under every pending condition, back to back in one slot (the shared first
        turn stays hot in the backend's or the server's cache; a backoff still leaves the slot
        to others). A conversation that ran out of its retries is left for the next round; the
        conditions after it still run."""
        failed = None
        with backend.slot():
            for s in pending:
                stim = s.stimuli[i]
                if (s.key, stim.stimulus_id) in finished:
                    continue
                label = s.labels[stim.stimulus_id] if s.labels is not None else None
                try:
                    out = rate_stimulus(backend, info, stim, s.condition, emotions, s.options,
                                        label=label)
                except TransientBackendError as err:
                    failed = err
                    continue
                finished[(s.key, stim.stimulus_id)] = out
                if on_done is not None:
                    on_done(1)
        return failed

    n = len(pending[0].stimuli)
    pool = conversation_pool(backend)
    errors: list = []
    for _ in range(ROUNDS):
        todo = [i for i in range(n) if any((s.key, s.stimuli[i].stimulus_id) not in finished
                                           for s in pending)]
        # servers: several stimuli in flight on the backend's pool, each one's conditions in order
        errors = ([one_stimulus(i) for i in todo] if pool is None or len(todo) <= 1
                  else pool.map(one_stimulus, todo))
        if not any(errors):
            break
    failed = [e for e in errors if e is not None]
    if failed:
        raise failed[0]  # finished conversations stay in memory for the task's retry
    with _FINISHED_LOCK:
        _FINISHED.pop((info.model_id, tuple(s.key for s in pending)), None)
    per_stimulus = [[finished[(s.key, s.stimuli[i].stimulus_id)] for s in pending]
                    for i in range(n)]
    calls = 0
    for j, s in enumerate(pending):
        out = [per_stimulus[i][j] for i in range(n)]
        rows = [r for r, _ in out]
        store.write_batch(s.folder, s.index, s.key, rows, [rec for _, recs in out for rec in recs],
                          emotions, plan_key=s.plan_key)
        calls += sum(r["n_calls"] for r in rows)
    return calls

