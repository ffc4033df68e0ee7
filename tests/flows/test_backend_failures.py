"""flows/ablations.py when a backend is down, as a user meets it: one line naming the host and
what to do, no traceback, and (for what a preflight can see) before Prefect even starts."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import write_small_project_params
from tests.fake_ollama import FakeOllama
from tests.flows.test_flow_runs import run_flow

pytestmark = [pytest.mark.integration]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_dead_server_is_found_before_the_flow_starts(tmp_path):
    params = write_small_project_params(tmp_path / "cfg")
    host = f"http://127.0.0.1:{_free_port()}"
    rc, out, err = run_flow(["--only", "A5", "--models", "ollama/gemma3:4b"], params,
                            tmp_path / "data", tmp_path, OLLAMA_HOST=host)
    line = _one_line(err)
    assert rc == 2 and f"Ollama server at {host}" in line and "ollama serve" in line
    assert not (tmp_path / "data" / "predictions").exists()


def test_missing_model_is_found_before_the_flow_starts(tmp_path):
    params = write_small_project_params(tmp_path / "cfg")
    with FakeOllama() as server:
        rc, out, err = run_flow(["--only", "A5", "--models", "ollama/llava:34b"], params,
                                tmp_path / "data", tmp_path, OLLAMA_HOST=server.host)
        assert server.chat_requests() == []
    line = _one_line(err)
    assert rc == 2 and "ollama pull llava:34b" in line and server.host in line


# An Ollama server that answers every chat with a 500 (the run stops in one line, after a bounded
# number of requests): tests/flows/test_breaker_stops_run.py, which starts that run once.
