"""A tripped circuit breaker ends the flow run: nothing is retried after it (not the request, not
the batch task, not the next ablation), and the error is one line naming the host, in the run's
summary only (an always-failing server stops the run with one line)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import write_small_project_params
from tests.fake_ollama import FakeOllama
from tests.flows.test_flow_runs import run_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_an_always_failing_server_ends_the_flow_without_any_retry_after_the_trip(tmp_path):
    params = write_small_project_params(tmp_path / "cfg")  # default retries 4, backoff 1 s
    with FakeOllama(fault_rate=1.0, faults=("500",)) as server:
        rc, out, err = run_flow(["--priority", "1", "--models", "ollama/gemma3:4b"], params,
                                tmp_path / "data", tmp_path, OLLAMA_HOST=server.host)
        sent = len(server.chat_requests())
    assert rc == 1 and not out["ok"], err[-3000:]
    error = out["error"]
    assert "\n" not in error and f"Ollama server at {server.host}" in error, error
    assert "looks down" in error and "Traceback" not in err
    # Prefect's own lines (server start/stop, flow runs) remain; no copy of the error besides the
    # summary
    assert err.count("looks down") == 0, err
    assert sent < 200  # was 265 requests and 4.7 minutes before the circuit breaker
    # the requests counted up to the trip, plus at most those already in flight (concurrency 4);
    # a batch retried after the trip would send more
    tripped = int(re.search(r"the last (\d+) requests all failed", error).group(1))
    assert tripped <= sent <= tripped + 4, (tripped, sent)
    # no batch of the model on that server was committed (the FER classifier needs no server:
    # its batches share the window and may be)
    assert not any((tmp_path / "data" / "predictions").rglob("ollama_*/b*.json"))
