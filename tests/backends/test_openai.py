"""The OpenAI-compatible backend against a local server speaking the documented API
(tests/fake_openai.py): the official client and real HTTP; only the server is a stand-in."""

from __future__ import annotations

import base64
import math

import numpy as np
import polars as pl
import pytest

from emoface.backends import make_backend
from emoface.backends.base import PermanentBackendError, TransientBackendError
from emoface.config import InferenceParams, OpenAIParams
from emoface.inference.conditions import Condition
from emoface.inference.engine import stimulus_inputs
from emoface.inference.runner import rate_stimulus
from emoface.inference.scheduler import run_condition
from emoface.inference.store import PredictionStore
from emoface.prompts import conversations
from emoface.stimuli.store import load_stimulus_set
from tests.fake_openai import FakeOpenAI, decode_image, image_of

MODEL = "openai/Qwen/Qwen2.5-VL-7B-Instruct"


def _inference(base_url: str, **kw) -> InferenceParams:
    o = OpenAIParams(base_url=base_url, **{"timeout_s": 5.0, "retries": 2, "backoff_s": 0.01, **kw})
    return InferenceParams(openai=o, batch_size=12)


@pytest.fixture
def stimuli(small_set, small_params):
    return load_stimulus_set(small_set, small_params.study)


def _backend(server, small_params, **kw):
    return make_backend(MODEL, _inference(server.base_url, **kw),
                        emotions=small_params.study.emotions)


def test_every_request_states_its_sampling_and_carries_the_conversation(stimuli, small_params):
    with FakeOpenAI() as server:
        be = _backend(server, small_params)
        stim = stimulus_inputs(stimuli)[0]
        opts = Condition(temperature=0.7, repeat=2).options(InferenceParams())
        turns = conversations("context_carry", small_params.study.emotions)[0]
        results = be.converse(stim, turns, opts)
        reqs = [r for r in server.chat_requests() if r["messages"][0]["content"] != "Say 1."]
    assert len(reqs) == 3 and len(results) == 3
    for i, req in enumerate(reqs):
        assert req["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
        # every sampling parameter stated: the server's generation_config never leaks in
        assert (req["temperature"], req["top_p"], req["seed"], req["max_tokens"], req["n"]) == \
            (0.7, 1.0, opts.seed, 64, 1)
        assert opts.seed == 1234 + 1  # repeat 2 of a T > 0 condition
        assert req["top_k"] == -1 and req["min_p"] == 0.0  # the engine extras (extra_body)
        assert req["logprobs"] is True and req["top_logprobs"] == 20
        assert "response_format" not in req
        assert len(req["messages"]) == 2 * i + 1  # answers carried
    first = reqs[0]["messages"][0]["content"]
    assert first[0] == {"type": "text", "text": turns[0].text}
    url = first[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert decode_image(url) == stim.image_path.read_bytes()
    for req in reqs[1:]:  # the image goes in the first user turn only
        assert isinstance(req["messages"][0]["content"], list)
        assert all(isinstance(m["content"], str) for m in req["messages"][1:])
    assert reqs[2]["messages"][1] == {"role": "assistant", "content": results[0].text}
    assert reqs[2]["messages"][3] == {"role": "assistant", "content": results[1].text}


def test_single_shot_sends_a_json_schema_response_format(stimuli, small_params, tmp_path):
    with FakeOpenAI() as server:
        be = _backend(server, small_params)
        c = Condition(protocol="single_shot")
        inf = _inference(server.base_url)
        df, calls = run_condition(be, stimuli, c, c.options(inf), PredictionStore(tmp_path),
                                  small_params.study.emotions, batch_size=12)
        req = server.chat_requests()[-1]
    assert calls == 48 and df.height == 48 and set(df["valence_status"]) == {"ok"}
    fmt = req["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"]
    schema = fmt["json_schema"]["schema"]
    assert schema["type"] == "object" and set(schema["required"]) == {"emotion", "valence",
                                                                      "arousal"}


def test_digit_variants_are_merged_as_for_ollama(stimuli, small_params):
    """The fake's rating step gives digit d the probability 0.8 w_d / z as "d" and 0.2 w_d / z
    as " d" (w_d = exp(-(d - c)^2 / 2), z = sum(w) / 0.9): merged, w_d / z; mass 0.9."""
    with FakeOpenAI() as server:
        be = _backend(server, small_params)
        stim = stimulus_inputs(stimuli)[3]
        c = Condition()
        row, records = rate_stimulus(be, be.info, stim, c, small_params.study.emotions,
                                     c.options(InferenceParams()))
    valence = next(r for r in records if r.field == "valence")
    centre = int(row["valence"])  # the fake answers its distribution's mode
    w = np.array([math.exp(-((d - centre) ** 2) / 2.0) for d in range(1, 10)])
    z = w.sum() / 0.9
    np.testing.assert_allclose(valence.digit_logprobs, np.log(w / z), rtol=1e-12)
    assert valence.source == "topk" and valence.digit_mass == pytest.approx(0.9)
    assert len(valence.top_tokens) == 19 and valence.top_ids.tolist() == [-1] * 19
    assert " 5" in valence.top_tokens and "5" in valence.top_tokens


def test_preflight_finds_the_logprob_cap_and_the_extras_the_server_takes(small_params):
    with FakeOpenAI(max_logprobs=5, accept_extras=False) as server:
        be = _backend(server, small_params)
        be.preflight()
        assert be.server.top_logprobs == 5 and be.server.extras is False
        turns = conversations("text_only", ["angry"], label="angry")[0]
        be.converse(None, turns, Condition().options(InferenceParams()))
        last = server.chat_requests()[-1]
    assert last["top_logprobs"] == 5 and "top_k" not in last and "min_p" not in last
    assert "top_logprobs 5; top_k/min_p not accepted" in be.info.backend_version


def test_provenance_per_row_and_no_invented_digest(stimuli, small_params, tmp_path):
    models = {"Qwen/Qwen2.5-VL-7B-Instruct": {"root": "/srv/qwen-vl", "max_model_len": 8192}}
    with FakeOpenAI(models=models, version="0.11.2") as server:
        be = _backend(server, small_params)
        c = Condition()
        df, _ = run_condition(be, stimuli, c, c.options(_inference(server.base_url)),
                              PredictionStore(tmp_path), small_params.study.emotions,
                              batch_size=12)
    row = df.row(0, named=True)
    assert row["served_by"] == server.base_url and row["backend"] == "openai"
    v = row["backend_version"]
    assert "server 0.11.2" in v and "served Qwen/Qwen2.5-VL-7B-Instruct" in v
    assert "root /srv/qwen-vl" in v and "max_model_len 8192" in v and "no weight digest" in v
    assert row["model_digest"].startswith("no-weight-digest:") and row["quantization"] == "unknown"
    assert be.info.extra["weight_digest"] is None
    # the cache key changes with what the server reports (another context length: new batches)
    with FakeOpenAI(models={"Qwen/Qwen2.5-VL-7B-Instruct": {"root": "/srv/qwen-vl",
                                                             "max_model_len": 4096}},
                    version="0.11.2") as other:
        assert _backend(other, small_params).info.digest != row["model_digest"]
    with FakeOpenAI(models=models, version=None) as no_version:  # llama-server: no /version
        assert "version unknown" in _backend(no_version, small_params).info.backend_version


def test_cached_tokens_are_read_and_stored_per_row(stimuli, small_params, tmp_path):
    with FakeOpenAI(cache_blocks=10_000) as server:
        be = _backend(server, small_params)
        store = PredictionStore(tmp_path)
        inf = _inference(server.base_url)
        first, _ = run_condition(be, stimuli, Condition(), Condition().options(inf), store,
                                 small_params.study.emotions, batch_size=12)
        c = Condition(temperature=0.7, repeat=1)
        again, _ = run_condition(be, stimuli, c, c.options(inf), store,
                                 small_params.study.emotions, batch_size=12)
        log = server.usage_log
    # the server's own count, summed per row: the second pass finds every first turn cached
    answered = [u for u in log if u["prompt_tokens"] > 20]
    assert first["cached_tokens"].sum() + again["cached_tokens"].sum() == \
        sum(u["cached_tokens"] for u in answered)
    assert (again["cached_tokens"] > first["cached_tokens"]).all()
    stored = pl.read_parquet(store.batch_file(
        store.condition_dir(stimuli.paths.root.name, c.condition_id, MODEL), 0, "parquet"))
    assert stored["cached_tokens"].to_list() == again["cached_tokens"].head(12).to_list()


def test_429_waits_at_least_retry_after_and_does_not_trip_the_breaker(small_params):
    with FakeOpenAI(faults=("429",), retry_after="7") as server:
        be = _backend(server, small_params, retries=3)
        _ = be.info  # the probe, before the faults start
        server.fault_rate = 1.0
        slept: list[float] = []
        cut_short: list[bool] = []

        def record(seconds, early=None):  # record the waits instead of sleeping them
            slept.append(seconds)
            cut_short.append(early())

        be.backoff_sleep = record
        turns = conversations("text_only", ["angry"], label="angry")[0]
        with pytest.raises(TransientBackendError, match="rate limited"):
            be.converse(None, turns, Condition().options(InferenceParams()))
    assert slept and min(slept) >= 7.0  # the server's Retry-After, over a 0.01 s backoff
    assert not any(cut_short)  # and never cut short: the server asked to wait
    assert be.breaker.open_reason is None


def test_api_key_only_from_the_environment_and_never_written(stimuli, small_params, tmp_path,
                                                            monkeypatch):
    secret = "sk-test-4f1c0ffee"
    with FakeOpenAI(api_key=secret) as server:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        with pytest.raises(PermanentBackendError, match="OPENAI_API_KEY"):
            _backend(server, small_params).preflight()
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        be = _backend(server, small_params)
        be.preflight()
        c = Condition()
        store = PredictionStore(tmp_path)
        run_condition(be, stimuli, c, c.options(_inference(server.base_url)), store,
                      small_params.study.emotions, batch_size=12)
        assert server.headers[-1]["authorization"] == f"Bearer {secret}"
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert secret.encode() not in written
    assert secret not in repr(be.info) and secret not in _inference(server.base_url).model_dump_json()


def test_a_dead_server_and_a_missing_model_are_one_line_in_preflight(small_params):
    from emoface.inference.preflight import preflight

    with pytest.raises(PermanentBackendError,
                       match=r"127\.0\.0\.1:9/v1 does not answer.*vllm serve"):
        preflight([MODEL], _inference("http://127.0.0.1:9/v1", retries=4))
    with FakeOpenAI() as server:
        with pytest.raises(PermanentBackendError,
                           match=r"does not serve 'llava-hf/llava-1.5-7b-hf' \(it serves: Qwen"):
            preflight(["openai/llava-hf/llava-1.5-7b-hf"], _inference(server.base_url))
        assert server.chat_requests() == []  # found from /v1/models, no model call
    with FakeOpenAI(max_logprobs=0) as server:
        with pytest.raises(PermanentBackendError, match="refuses log-probabilities.*max-logprobs"):
            preflight([MODEL], _inference(server.base_url))


def test_base_url_from_OPENAI_BASE_URL(monkeypatch, small_params):
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        be = make_backend(MODEL, InferenceParams(), emotions=small_params.study.emotions)
        assert be.info.extra["host"] == server.base_url


def test_a_worker_uses_its_own_OPENAI_BASE_URL(monkeypatch):
    from emoface.inference.remote import worker_inference

    flow_side = InferenceParams(openai=OpenAIParams(base_url="http://flow:8000/v1"))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("EMOFACE_OPENAI_CONCURRENCY", "32")
    here = worker_inference(flow_side)
    assert here.openai.base_url == "http://127.0.0.1:8001/v1" and here.openai.concurrency == 32


def _rate(server, stimuli, small_params, folder, **kw):
    inf = _inference(server.base_url, **kw)
    be = make_backend(MODEL, inf, emotions=small_params.study.emotions)
    retries: list[int] = []
    be.on_retry = lambda: retries.append(1)
    c = Condition()
    df, calls = run_condition(be, stimuli, c, c.options(inf), PredictionStore(folder),
                              small_params.study.emotions, batch_size=12)
    return df, calls, len(retries)


def test_thirty_percent_faults_give_the_fault_free_rows(stimuli, small_params, tmp_path):
    with FakeOpenAI() as clean:
        rows0, calls0, _ = _rate(clean, stimuli, small_params, tmp_path / "clean")
    with FakeOpenAI(fault_rate=0.3, faults=("500", "drop", "429"), seed=5) as server:
        rows1, calls1, retries = _rate(server, stimuli, small_params, tmp_path / "faulty",
                                       retries=8, concurrency=4, timeout_s=30.0)
        requests = len(server.chat_requests())
        faults = len(server.fault_log)
    volatile = {"latency_s", "attempts", "served_by", "model_digest", "backend_version"}
    keep = [c for c in rows0.columns if c not in volatile]
    assert rows1.select(keep).equals(rows0.select(keep))
    assert set(server.fault_log) == {"500", "drop", "429"} and faults > 20
    assert calls1 == calls0 == 144
    # every failed request was counted once as a retry: requests == probe + answers + retries
    assert requests == 1 + calls1 + retries and retries >= faults
    assert server.max_in_flight <= 4


def test_always_failing_server_trips_the_breaker_naming_the_host(stimuli, small_params, tmp_path):
    with FakeOpenAI() as server:
        inf = _inference(server.base_url, retries=4, backoff_s=0.3)
        be = make_backend(MODEL, inf, emotions=small_params.study.emotions)
        _ = be.info
        server.fault_rate, server.faults = 1.0, ("500",)
        c = Condition()
        with pytest.raises(PermanentBackendError,
                           match=f"OpenAI-compatible server at {server.base_url} looks down"):
            run_condition(be, stimuli, c, c.options(inf), PredictionStore(tmp_path),
                          small_params.study.emotions, batch_size=12)


def test_the_image_is_the_stimulus_bytes(stimuli, small_params):
    with FakeOpenAI() as server:
        be = _backend(server, small_params)
        stims = stimulus_inputs(stimuli)[:2]
        c = Condition()
        for s in stims:
            be.converse(s, conversations("context_carry", small_params.study.emotions)[0][:1],
                        c.options(InferenceParams()))
        urls = [image_of(r) for r in server.chat_requests() if image_of(r)]
    assert [base64.b64decode(u.split(",", 1)[1]) for u in urls] == \
        [s.image_path.read_bytes() for s in stims]


def test_image_major_asks_a_conversation_that_ran_out_of_retries_again(stimuli, small_params,
                                                                       tmp_path):
    """Image-major (the flow's schedule for conditions sharing a first turn): one conversation
    fails on every attempt of its second turn in round one; the group asks it again after the
    rest and stores the rows of the condition-at-a-time run."""
    from emoface.inference.engine import plan_condition
    from emoface.inference.scheduler import run_image_major, run_specs

    conditions = [Condition(), Condition(temperature=0.7, repeat=1),
                  Condition(temperature=0.7, repeat=2)]

    def run(server, folder, image_major):
        inf = _inference(server.base_url, retries=1, concurrency=4)
        be = make_backend(MODEL, inf, emotions=small_params.study.emotions)
        store = PredictionStore(folder)
        specs = [s for c in conditions
                 for s in plan_condition(be, stimuli, c, c.options(inf), store, batch_size=12)]
        if image_major:
            run_image_major(be, specs, store, small_params.study.emotions)
        else:
            for c in conditions:
                run_specs(be, [s for s in specs if s.condition.condition_id == c.condition_id],
                          store, small_params.study.emotions)
        return pl.concat([pl.read_parquet(store.batch_file(s.folder, s.index, "parquet"))
                          for s in specs]).drop("latency_s", "attempts", "cached_tokens",
                                                "served_by")

    with FakeOpenAI() as clean:
        reference = run(clean, tmp_path / "ref", image_major=False)
    bad = base64.b64encode(stimulus_inputs(stimuli)[5].image_path.read_bytes()).decode()
    left = {"n": 2}  # retries=1: both attempts of one request fail, in round one only

    def second_turn_of_bad(body: dict) -> bool:
        url = image_of(body) or ""
        if url.endswith(bad) and len(body["messages"]) == 3 and body["temperature"] == 0.7 \
                and left["n"]:
            left["n"] -= 1
            return True
        return False

    with FakeOpenAI(fail_when=second_turn_of_bad) as server:
        rows = run(server, tmp_path / "im", image_major=True)
        answered = len(server.chat_requests()) - 2 - 1  # two failed attempts, one probe
    assert left["n"] == 0 and rows.equals(reference)
    # every conversation once, and the failed one's turn 1 again: 3 x 48 x 3 + 1 answers
    assert answered == 3 * 48 * 3 + 1


def test_a_worker_computes_the_rows_of_a_local_run_with_its_own_server(stimuli, small_params,
                                                                      monkeypatch):
    """The worker side of a cluster batch: OPENAI_BASE_URL there wins over the flow's
    base_url; the rows are those of a local run; another max_model_len is other weights."""
    from emoface.inference.remote import (
        ModelDigestMismatch,
        RemoteBatch,
        compute_batch,
        describe_model,
        pack_stimuli,
    )
    from emoface.inference.runner import run_batch

    emotions = small_params.study.emotions
    c = Condition()
    stims = stimulus_inputs(stimuli)[:6]
    flow_side = _inference("http://flow-machine:8000/v1")
    with FakeOpenAI() as here:
        monkeypatch.setenv("OPENAI_BASE_URL", here.base_url)
        served = describe_model(MODEL, flow_side, emotions)
        assert served.digest.startswith("no-weight-digest:") and here.base_url in served.served_by
        batch = RemoteBatch(MODEL, flow_side, tuple(emotions), c, c.options(flow_side), 0,
                            "k" * 64, pack_stimuli(stims), None, served.digest, "elsewhere")
        out = compute_batch(batch)
        monkeypatch.delenv("OPENAI_BASE_URL")
        local = make_backend(MODEL, _inference(here.base_url), emotions=emotions)
        rows, _ = run_batch(local, stims, c, emotions, c.options(flow_side))
    skip = {"served_by", "latency_s", "cached_tokens"}
    assert [{k: v for k, v in r.items() if k not in skip} for r in out.rows] == \
        [{k: v for k, v in r.items() if k not in skip} for r in rows]
    other = {"Qwen/Qwen2.5-VL-7B-Instruct": {"root": "/models/Qwen2.5-VL-7B-Instruct",
                                             "max_model_len": 4096}}
    with FakeOpenAI(models=other) as there:
        monkeypatch.setenv("OPENAI_BASE_URL", there.base_url)
        with pytest.raises(ModelDigestMismatch, match="max_model_len on both"):
            compute_batch(batch)
