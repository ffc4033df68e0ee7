"""The worker side of a cluster batch, in-process against the stand-in Ollama server: the same
rows as a local batch, provenance per row, a digest mismatch refused naming both hosts, image
bytes checked, the worker's own endpoint and capacity, one backend per worker process."""

from __future__ import annotations

import dataclasses

import pytest

from emoface.backends import PermanentBackendError
from emoface.config import InferenceParams, OllamaParams
from emoface.inference import remote
from emoface.inference.conditions import Condition
from emoface.inference.engine import stimulus_inputs
from emoface.inference.remote import (
    ModelDigestMismatch,
    RemoteBatch,
    compute_batch,
    describe_model,
    pack_stimuli,
    worker_backend,
    worker_inference,
)
from emoface.inference.runner import run_batch
from emoface.stimuli.store import load_stimulus_set
from tests.fake_ollama import FakeOllama

DIGEST_A = "a2af6cc3eb7f" + "0" * 52
DIGEST_B = "b" * 64


@pytest.fixture(autouse=True)
def fresh_worker(monkeypatch):
    """Each test is a fresh worker process: no cached backends, no inherited endpoint."""
    monkeypatch.setattr(remote, "_backends", {})
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("EMOFACE_OLLAMA_CONCURRENCY", raising=False)


def _batch(ss, inference, emotions, *, digest: str, reference: str, n: int = 6) -> RemoteBatch:
    condition = Condition()
    stims = stimulus_inputs(ss)[:n]
    return RemoteBatch("ollama/gemma3:4b", inference, tuple(emotions), condition,
                       condition.options(inference), 0, "k" * 64, pack_stimuli(stims), None,
                       digest, reference)


def test_remote_rows_equal_local_rows_and_record_the_server(small_set, small_params):
    ss = load_stimulus_set(small_set, small_params.study)
    emotions = small_params.study.emotions
    with FakeOllama() as server:
        inference = InferenceParams(ollama=OllamaParams(host=server.host, retries=0))
        served = describe_model("ollama/gemma3:4b", inference, emotions)
        assert served.digest == f"sha256:{DIGEST_A}" and server.host in served.served_by
        batch = _batch(ss, inference, emotions, digest=served.digest, reference="elsewhere")
        out = compute_batch(batch)
        local_backend = worker_backend("ollama/gemma3:4b", inference, emotions)
        local_rows, local_records = run_batch(local_backend, stimulus_inputs(ss)[:6], Condition(),
                                              emotions, Condition().options(inference))
    assert out.calls == 6 * 3 and len(out.rows) == 6
    assert {r["served_by"] for r in out.rows} == {served.served_by}
    assert all(r["model_digest"] == f"sha256:{DIGEST_A}" for r in out.rows)
    skip = {"served_by", "latency_s"}
    assert ([{k: v for k, v in r.items() if k not in skip} for r in out.rows]
            == [{k: v for k, v in r.items() if k not in skip} for r in local_rows])
    assert [dataclasses.astuple(r)[:3] for r in out.records] == [
        dataclasses.astuple(r)[:3] for r in local_records]


def test_a_server_with_other_weights_is_refused_naming_both_hosts(small_set, small_params):
    ss = load_stimulus_set(small_set, small_params.study)
    with FakeOllama(models={"gemma3:4b": DIGEST_B}) as server:
        inference = InferenceParams(ollama=OllamaParams(host=server.host, retries=0))
        batch = _batch(ss, inference, small_params.study.emotions, digest=f"sha256:{DIGEST_A}",
                       reference="tcp://10.0.0.7:4000 http://127.0.0.1:11434")
        with pytest.raises(ModelDigestMismatch) as err:
            compute_batch(batch)
        assert server.chat_requests() == []  # nothing computed with the wrong weights
    msg = str(err.value)
    assert server.host in msg and "tcp://10.0.0.7:4000 http://127.0.0.1:11434" in msg
    assert f"sha256:{DIGEST_B}" in msg and f"sha256:{DIGEST_A}" in msg
    assert "ollama pull gemma3:4b" in msg


def test_image_bytes_that_do_not_match_the_manifest_hash_are_refused(small_set, small_params):
    ss = load_stimulus_set(small_set, small_params.study)
    with FakeOllama() as server:
        inference = InferenceParams(ollama=OllamaParams(host=server.host, retries=0))
        batch = _batch(ss, inference, small_params.study.emotions, digest=f"sha256:{DIGEST_A}",
                       reference="x", n=2)
        bad = dataclasses.replace(batch.stimuli[1], data=batch.stimuli[1].data + b"\0")
        batch = dataclasses.replace(batch, stimuli=(batch.stimuli[0], bad))
        with pytest.raises(PermanentBackendError, match=batch.stimuli[1].stimulus_id):
            compute_batch(batch)


def test_a_missing_model_names_the_worker_and_the_pull_to_run(small_params):
    with FakeOllama(models={"llava:7b": DIGEST_B}) as server:
        inference = InferenceParams(ollama=OllamaParams(host=server.host, retries=0))
        with pytest.raises(PermanentBackendError) as err:
            describe_model("ollama/gemma3:4b", inference, small_params.study.emotions)
    assert str(err.value).startswith("worker ") and "ollama pull gemma3:4b" in str(err.value)
    assert server.host in str(err.value)


def test_the_worker_uses_its_own_endpoint_and_capacity(monkeypatch, small_params):
    flow_side = InferenceParams(ollama=OllamaParams(host="http://flow-machine:11434",
                                                    concurrency=4))
    assert worker_inference(flow_side) == flow_side
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:5555")
    monkeypatch.setenv("EMOFACE_OLLAMA_CONCURRENCY", "16")
    here = worker_inference(flow_side)
    assert here.ollama.host == "http://127.0.0.1:5555" and here.ollama.concurrency == 16
    backend = worker_backend("ollama/gemma3:4b", flow_side, small_params.study.emotions)
    assert backend.max_concurrency == 16 and backend.host.startswith("http://127.0.0.1:5555")
    # built once per worker process: every batch of the model shares it (and its limiter)
    assert worker_backend("ollama/gemma3:4b", flow_side, small_params.study.emotions) is backend
    monkeypatch.setenv("EMOFACE_OLLAMA_CONCURRENCY", "many")
    with pytest.raises(PermanentBackendError, match="EMOFACE_OLLAMA_CONCURRENCY"):
        worker_inference(flow_side)
