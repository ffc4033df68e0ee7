"""The circuit breaker (emoface.backends.ollama): one per server in a process, so a server found
down fails every backend calling it at once; conversations sleeping in a backoff wake and fail
instead of sleeping it out; nothing is retried after it; in a long-lived process (a Dask worker)
it lets requests through again after its hold time."""

from __future__ import annotations

import json
import threading

import pytest

from emoface.backends import make_backend
from emoface.backends.base import ServerDown, TransientBackendError
from emoface.config import InferenceParams, OllamaParams
from emoface.inference.conditions import Condition
from emoface.inference.engine import stimulus_inputs
from emoface.inference.runner import run_batch
from emoface.prompts import conversations
from emoface.stimuli.store import load_stimulus_set
from tests.fake_ollama import FakeOllama


def _backend(host: str, emotions, **kw):
    ollama = OllamaParams(host=host, **{"timeout_s": 5.0, "retries": 0, "backoff_s": 0.01, **kw})
    return make_backend("ollama/gemma3:4b", InferenceParams(ollama=ollama, batch_size=24),
                        emotions=emotions)


def test_one_breaker_per_server_and_it_closes_after_its_hold_time(small_params):
    emotions = small_params.study.emotions
    turns = conversations("text_only", ["angry"], label="angry")[0]
    opts = Condition().options(InferenceParams())
    with FakeOllama(fault_rate=1.0, faults=("500",)) as server:
        a, b = _backend(server.host, emotions), _backend(server.host, emotions)
        assert a.breaker is b.breaker
        a.breaker.seconds = 0.0  # trip on the count alone
        for _ in range(15):
            with pytest.raises(TransientBackendError):
                a.converse(None, turns, opts)
        with pytest.raises(ServerDown, match=f"Ollama server at {server.host}/? looks down"):
            a.converse(None, turns, opts)
        n = len(server.chat_requests())
        # another backend of the same server (another model or stimulus set) sends nothing
        with pytest.raises(ServerDown):
            b.converse(None, turns, opts)
        assert n == 16 and len(server.chat_requests()) == 16
        a.breaker.hold_s = 0.0  # held long enough: the next call reaches the server again
        server.fault_rate = 0.0
        assert a.converse(None, turns, opts)[0].text
        assert len(server.chat_requests()) == 17 and a.breaker.open_reason is None


def test_conversations_sleeping_in_a_backoff_wake_when_the_breaker_opens(small_set,
                                                                        small_params):
    emotions = small_params.study.emotions
    ss = load_stimulus_set(small_set, small_params.study)
    stimuli = stimulus_inputs(ss)[:24]
    with FakeOllama(fault_rate=1.0, faults=("500",)) as server:
        # every request fails; each conversation then sleeps 30-60 s before its retry
        be = _backend(server.host, emotions, retries=3, backoff_s=30.0, concurrency=4)
        be.breaker.seconds = 0.0
        c = Condition()
        out: dict = {}

        def run():
            try:
                run_batch(be, stimuli, c, emotions, c.options(InferenceParams()))
            except BaseException as err:  # noqa: BLE001 - inspected below
                out["err"] = err

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(timeout=25)  # a bound for a hang (the backoff is 30 s), not a timing
        assert not t.is_alive(), "a conversation slept out its backoff after the breaker opened"
        reqs = server.chat_requests()
    assert isinstance(out.get("err"), ServerDown)
    # 16 failures open it, requests already in flight (concurrency 4) end too; those waiting for
    # a slot send nothing, and no request is sent twice (no retry went out)
    assert 16 <= len(reqs) <= 16 + 3
    assert len({json.dumps(r["messages"], sort_keys=True) for r in reqs}) == len(reqs)
