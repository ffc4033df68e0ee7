"""The Ollama backend against a local HTTP server speaking the documented Ollama API.

The backend's code path is exactly the one a real server gets: the official client, real HTTP.
Only the server is a stand-in (there is no Ollama binary here).
"""

from __future__ import annotations

import base64

import polars as pl
import pytest

from emoface.backends import make_backend
from emoface.backends.base import PermanentBackendError, TransientBackendError
from emoface.config import InferenceParams, OllamaParams
from emoface.inference.conditions import Condition
from emoface.inference.scheduler import run_condition
from emoface.inference.store import PredictionStore
from emoface.prompts import conversations
from emoface.stimuli.store import load_stimulus_set
from tests.fake_ollama import FakeOllama


def _inference(host: str, **kw) -> InferenceParams:
    ollama = OllamaParams(host=host, **{"timeout_s": 5.0, "retries": 2, "backoff_s": 0.01, **kw})
    return InferenceParams(ollama=ollama, batch_size=12)


@pytest.fixture
def stimuli(small_set, small_params):
    return load_stimulus_set(small_set, small_params.study)


def test_context_carry_request_shapes(stimuli, small_params):
    with FakeOllama() as server:
        be = make_backend("ollama/gemma3:4b", _inference(server.host),
                          emotions=small_params.study.emotions)
        info = be.info
        assert info.digest.startswith("sha256:a2af6cc3eb7f")
        assert "ollama-server 0.12.9" in info.backend_version and info.quantization == "Q4_K_M"
        from emoface.inference.engine import stimulus_inputs

        stim = stimulus_inputs(stimuli)[0]
        opts = Condition().options(InferenceParams())
        turns = conversations("context_carry", small_params.study.emotions)[0]
        results = be.converse(stim, turns, opts)
        reqs = server.chat_requests()
        assert len(reqs) == 3 and len(results) == 3
        for i, req in enumerate(reqs):
            # options are always explicit: server defaults never leak into a run
            assert req["options"] == {"temperature": 0.0, "seed": 1234, "num_predict": 64,
                                      "num_ctx": 4096}
            assert req["logprobs"] is True and req["top_logprobs"] == 20
            assert len(req["messages"]) == 2 * i + 1  # answers carried
            assert req["messages"][0]["images"] == [
                base64.b64encode(stim.image_path.read_bytes()).decode()]
            assert all("images" not in m or not m["images"] for m in req["messages"][1:])
        assert reqs[2]["messages"][1] == {"role": "assistant", "content": results[0].text}
        assert results[1].steps and results[1].steps[0].top  # logprobs came back
        assert results[1].steps[0].top[0][0] == -1  # Ollama exposes no token ids


def test_single_shot_sends_json_schema(stimuli, small_params, tmp_path):
    with FakeOllama() as server:
        inf = _inference(server.host)
        be = make_backend("ollama/gemma3:4b", inf, emotions=small_params.study.emotions)
        c = Condition(protocol="single_shot")
        df, calls = run_condition(be, stimuli, c, c.options(inf), PredictionStore(tmp_path),
                                  small_params.study.emotions, batch_size=12)
        assert calls == 48 and df.height == 48
        fmt = server.chat_requests()[0]["format"]
        assert fmt["type"] == "object" and set(fmt["required"]) == {"emotion", "valence", "arousal"}
        assert set(df["valence_status"]) == {"ok"}


def test_missing_model_fails_at_once_with_pull_hint(small_params):
    with FakeOllama() as server:
        be = make_backend("ollama/llava:34b", _inference(server.host),
                          emotions=small_params.study.emotions)
        with pytest.raises(PermanentBackendError, match="ollama pull llava:34b"):
            _ = be.info
        be2 = make_backend("ollama/llava:34b", _inference(server.host),
                           emotions=small_params.study.emotions)
        be2._info = object()  # skip the tags lookup: the chat call itself must say 404 -> pull
        with pytest.raises(PermanentBackendError, match="ollama pull llava:34b"):
            be2.converse(None, conversations("text_only", ["angry"], label="angry")[0],
                         Condition().options(InferenceParams()))
        assert len(server.chat_requests()) == 1  # no retries for a permanent error


def test_connection_refused_is_transient_and_retried(small_params):
    inf = _inference("http://127.0.0.1:9", retries=1)
    be = make_backend("ollama/gemma3:4b", inf, emotions=small_params.study.emotions)
    with pytest.raises(TransientBackendError, match="cannot reach"):
        _ = be.info


def test_host_comes_from_OLLAMA_HOST(monkeypatch, small_params):
    with FakeOllama() as server:
        monkeypatch.setenv("OLLAMA_HOST", server.host)
        be = make_backend("ollama/gemma3:4b", InferenceParams(),
                          emotions=small_params.study.emotions)
        assert be.info.extra["host"].rstrip("/") == server.host


def test_thirty_percent_transient_faults_still_complete(stimuli, small_params, tmp_path):
    with FakeOllama(fault_rate=0.3, stall_s=1.5, seed=3) as server:
        inf = _inference(server.host, timeout_s=0.5, retries=8, concurrency=4)
        be = make_backend("ollama/gemma3:4b", inf, emotions=small_params.study.emotions)
        c = Condition()
        df, calls = run_condition(be, stimuli, c, c.options(inf), PredictionStore(tmp_path),
                                  small_params.study.emotions, batch_size=12)
        assert df.height == 48 and df["stimulus_id"].n_unique() == 48
        assert set(server.fault_log) == {"500", "drop", "stall"}
        # the retries are visible in the record
        assert df["attempts"].sum() == df["n_calls"].sum() + len(server.fault_log)
        assert df["attempts"].max() > df["n_calls"].min()
        assert server.max_in_flight <= 4


def _rate(server, stimuli, small_params, folder, **kw):
    inf = _inference(server.host, **kw)
    be = make_backend("ollama/gemma3:4b", inf, emotions=small_params.study.emotions)
    c = Condition()
    df, calls = run_condition(be, stimuli, c, c.options(inf), PredictionStore(folder),
                              small_params.study.emotions, batch_size=12)
    return be, df, calls


def test_thirty_percent_faults_give_the_fault_free_rows_at_few_extra_requests(
        stimuli, small_params, tmp_path):
    with FakeOllama() as clean:
        _, rows0, calls0 = _rate(clean, stimuli, small_params, tmp_path / "clean")
    retries = []
    with FakeOllama(fault_rate=0.3, faults=("500", "drop"), seed=5) as server:
        inf = _inference(server.host, retries=4, concurrency=4, timeout_s=30.0)
        be = make_backend("ollama/gemma3:4b", inf, emotions=small_params.study.emotions)
        be.on_retry = lambda: retries.append(1)
        c = Condition()
        rows1, calls1 = run_condition(be, stimuli, c, c.options(inf),
                                      PredictionStore(tmp_path / "faulty"),
                                      small_params.study.emotions, batch_size=12)
        requests = len(server.chat_requests())
        faults = len(server.fault_log)
    volatile = {"latency_s", "attempts", "served_by"}  # served_by: another server (port)
    keep = [col for col in rows0.columns if col not in volatile]
    assert rows1.select(keep).equals(rows0.select(keep))
    assert calls1 == calls0 == 144 and faults > 20
    # every fault cost exactly one request and was counted for the progress bar: no conversation
    # was thrown away and asked again
    # (a client timeout on a loaded machine is one more counted retry, never a lost conversation)
    assert requests == calls1 + len(retries) and len(retries) >= faults
    assert requests / calls1 <= 1.5


def _image_of(body: dict) -> str:
    return body["messages"][0]["images"][0]


def test_backoff_sleep_leaves_the_slot_to_another_conversation(stimuli, small_params, tmp_path):
    from emoface.inference.engine import stimulus_inputs
    from emoface.inference.runner import run_batch

    with FakeOllama(fail_first=1) as server:
        inf = _inference(server.host, concurrency=1, retries=2, backoff_s=0.5)
        be = make_backend("ollama/gemma3:4b", inf, emotions=small_params.study.emotions)
        c = Condition()
        rows, _ = run_batch(be, stimulus_inputs(stimuli)[:2], c, small_params.study.emotions,
                            c.options(inf))
        reqs = server.chat_requests()
    assert len(rows) == 2 and len(reqs) == 7 and server.max_in_flight == 1
    first = _image_of(reqs[0])  # this one failed and slept in its backoff ...
    # ... while the other conversation used the single slot for all three of its turns
    assert [_image_of(r) != first for r in reqs[1:4]] == [True] * 3
    assert [_image_of(r) == first for r in reqs[4:]] == [True] * 3


def test_a_failed_batch_keeps_its_finished_conversations_for_the_retry(
        stimuli, small_params, tmp_path):
    from emoface.inference.engine import plan_condition, run_one_batch

    with FakeOllama() as server:
        inf = _inference(server.host, retries=1, backoff_s=0.01)
        be = make_backend("ollama/gemma3:4b", inf, emotions=small_params.study.emotions)
        c = Condition()
        store = PredictionStore(tmp_path)
        spec = plan_condition(be, stimuli, c, c.options(inf), store, batch_size=12)[0]
        bad = base64.b64encode(spec.stimuli[5].image_path.read_bytes()).decode()
        server.fail_when = lambda body: _image_of(body) == bad
        with pytest.raises(TransientBackendError):
            run_one_batch(be, spec, store, small_params.study.emotions)
        # 11 conversations x 3 turns, and the bad one: 2 attempts x 2 rounds
        assert len(server.chat_requests()) == 11 * 3 + 4
        server.fail_when = None
        before = len(server.chat_requests())
        run_one_batch(be, spec, store, small_params.study.emotions)  # the batch's retry
        assert len(server.chat_requests()) - before == 3  # only the missing conversation
        assert store.is_done(spec.folder, spec.index, spec.key)  # committed and verified
        rows = pl.read_parquet(store.batch_file(spec.folder, spec.index, "parquet"))
        assert rows.height == 12 and set(rows["emotion_status"]) <= {"ok", "normalised"}


def test_always_failing_server_trips_the_breaker_naming_the_host(stimuli, small_params, tmp_path):
    with FakeOllama(fault_rate=1.0, faults=("500",)) as server:
        with pytest.raises(PermanentBackendError,
                           match=f"Ollama server at {server.host}/? looks down") as info:
            _rate(server, stimuli, small_params, tmp_path, retries=4, backoff_s=0.3)
        sent = len(server.chat_requests())
    assert "server error 500" in str(info.value)
    # The breaker opens at the first failure once >= 16 requests in a row failed over >= 3 s.
    # Every one of the 48 conversations is in flight by then (a backing-off one leaves its slot
    # to the next); with backoff_s 0.3 each sends its first 4 requests within 3 s (waits of
    # 0.3-0.6, 0.6-0.9, 1.2-1.5 s) and no 5th before 4.5 s, plus at most one request in flight
    # when the breaker opens: at most 48 x 5 (265 over 4.7 min before the breaker)
    assert sent <= 48 * 5


def test_breaker_once_open_sends_nothing(small_params):
    with FakeOllama(fault_rate=1.0, faults=("500",)) as server:
        be = make_backend("ollama/gemma3:4b", _inference(server.host, retries=0),
                          emotions=small_params.study.emotions)
        be.breaker.seconds = 0.0  # trip on the count alone for this test
        turns = conversations("text_only", ["angry"], label="angry")[0]
        opts = Condition().options(InferenceParams())
        for _ in range(15):
            with pytest.raises(TransientBackendError):
                be.converse(None, turns, opts)
        with pytest.raises(PermanentBackendError, match="looks down"):
            be.converse(None, turns, opts)
        n = len(server.chat_requests())
        with pytest.raises(PermanentBackendError, match="looks down"):
            be.converse(None, turns, opts)
        assert n == 16 and len(server.chat_requests()) == n


def test_preflight_names_the_host_and_what_to_do(small_params):
    from emoface.inference.preflight import preflight

    with pytest.raises(PermanentBackendError, match=r"127\.0\.0\.1:9 does not answer.*ollama serve"):
        preflight(["ollama/gemma3:4b"], _inference("http://127.0.0.1:9", retries=4))
    with FakeOllama() as server:
        with pytest.raises(PermanentBackendError, match="ollama pull llava:7b"):
            preflight(["ollama/llava:7b"], _inference(server.host))
        assert preflight(["simulated/gemma3-4b", "ollama/gemma3:4b"],
                         _inference(server.host)) == ["simulated/gemma3-4b", "ollama/gemma3:4b"]
        assert server.chat_requests() == []  # a preflight costs no model call


def test_every_request_sent_again_is_counted_even_when_a_conversation_runs_out_of_retries(
        stimuli, small_params):
    """A request that fails on its last attempt, and the turns of its conversation that had
    already been answered, are all sent again when the conversation is asked again in the next
    round: each one is a counted retry, so requests == answers + retries exactly."""
    from emoface.inference.engine import stimulus_inputs
    from emoface.inference.runner import run_batch

    stims = stimulus_inputs(stimuli)[:3]
    with FakeOllama() as server:
        bad = base64.b64encode(stims[1].image_path.read_bytes()).decode()
        failures = {"left": 2}

        def second_turn_of_bad(body: dict) -> bool:  # turn 2 of one image fails twice
            if _image_of(body) == bad and len(body["messages"]) == 3 and failures["left"]:
                failures["left"] -= 1
                return True
            return False

        server.fail_when = second_turn_of_bad
        inf = _inference(server.host, retries=1, backoff_s=0.01, concurrency=2)
        be = make_backend("ollama/gemma3:4b", inf, emotions=small_params.study.emotions)
        retries = []
        be.on_retry = lambda: retries.append(1)
        c = Condition()
        rows, _ = run_batch(be, stims, c, small_params.study.emotions, c.options(inf))
        requests = len(server.chat_requests())
    assert len(rows) == 3
    # the bad image: turn 1, turn 2 failing twice (retries exhausted), then the whole
    # conversation again in the next round: turn 1 (sent again), 2 and 3 -> 6 requests
    # for 3 answers; 2 failed requests + 1 lost answer = 3 retries
    assert requests == 3 * 3 + 3 and len(retries) == 3
