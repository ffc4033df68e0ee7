"""The circuit breaker (emoface.backends.http): one per server in a process, so a server found
down fails every backend calling it at once; conversations sleeping in a backoff wake and fail
instead of sleeping it out; nothing is retried after it; in a long-lived process (a Dask worker)
it lets requests through again after its hold time. And the backoff beside it: slept in full while
other work can use the server, ended early when nothing else would and the server is answering."""

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


def test_a_backoff_ends_early_when_nothing_else_would_use_the_server(small_params):
    emotions = small_params.study.emotions
    turns = conversations("text_only", ["angry"], label="angry")[0]
    opts = Condition().options(InferenceParams())
    with FakeOllama(fail_first=1) as server:
        # one conversation, its first request fails: a 60-120 s backoff, but the backend's only
        # slot is free, nobody waits for it, and the server answered (1 failure in a row)
        be = _backend(server.host, emotions, retries=1, backoff_s=60.0, concurrency=1)
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(r=be.converse(None, turns, opts)),
                             daemon=True)
        t.start()
        t.join(timeout=30)  # a bound for a hang (the backoff is 60 s), not a timing
        assert not t.is_alive(), "the conversation slept out a backoff nobody else could use"
        assert len(server.chat_requests()) == 1 + len(turns)
        assert all(a.text for a in out["r"])


def test_the_backoff_is_kept_while_the_server_fails_in_a_row(small_params):
    with FakeOllama() as server:
        be = _backend(server.host, small_params.study.emotions)
        retries = be._retries
        assert retries._retry_early()
        for _ in range(2):  # 2 failures in a row: still answering
            be.breaker.failure(TransientBackendError("500"))
        assert retries._retry_early()
        be.breaker.failure(TransientBackendError("500"))  # 3 in a row: keep the backoff
        assert not retries._retry_early()
        be.breaker.success()
        assert retries._retry_early()


def test_idle_means_a_free_slot_nobody_waits_for(small_params):
    with FakeOllama() as server:
        be = _backend(server.host, small_params.study.emotions, concurrency=2)
        assert be.idle()
        with be.slot():
            assert be.idle()  # one of two slots free
            with be.slot():
                assert not be.idle()  # both held
                entered, leave = threading.Event(), threading.Event()

                def third():
                    with be.slot():
                        entered.set()
                        leave.wait(10)

                t = threading.Thread(target=third, daemon=True)
                t.start()
            # one slot was given back: the waiting conversation takes it, and until it holds
            # it the backend is not idle either
            assert entered.wait(10)
            assert not be.idle()
            leave.set()
            t.join(10)
        assert be.idle()
