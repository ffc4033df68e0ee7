"""Fixtures for the flow tests: a real `prefect server start` on a free loopback port, or the
session's shared one with a view of what the test itself made on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.prefect_shared import (
    flow_env,
    free_port,
    shared_api_url,
    start_prefect_server,
    stop_process_group,
)

__all__ = ["free_port", "prefect_server", "shared_prefect"]


@pytest.fixture
def prefect_server(tmp_path):
    """A server of the test's own (its database holds only this test's runs)."""
    proc, url, env = start_prefect_server(tmp_path / "home")
    yield url, env
    stop_process_group(proc)


@dataclass(frozen=True)
class SharedServer:
    """The session's server (tests/prefect_shared.py), read back as if it were the test's own:
    the suite runs one test at a time, so the flow runs created since the test began are the
    test's, and their task runs, logs and artifacts are found through their ids."""

    url: str
    env: dict[str, str]
    since: str  # ISO time before the test started anything

    def flow_runs(self, api: httpx.Client) -> list[dict]:
        runs, page = [], None
        while page is None or len(page) == 200:
            page = api.post("/flow_runs/filter", json={
                "flow_runs": {"expected_start_time": {"after_": self.since}},
                "limit": 200, "offset": len(runs)}).json()
            runs += page
        return runs

    def of_runs(self, api: httpx.Client, kind: str, ids: list[str], **body) -> list[dict]:
        """Every task run, log or artifact (``kind``: task_runs, logs, artifacts) of those runs."""
        found, page = [], None
        filt = {kind: {"flow_run_id": {"any_": ids}}}
        while page is None or len(page) == 200:
            page = api.post(f"/{kind}/filter", json={**filt, **body, "limit": 200,
                                                     "offset": len(found)}).json()
            found += page
        return found


@pytest.fixture
def shared_prefect(tmp_path: Path) -> SharedServer:
    """The session's Prefect server (no start of its own: tens of seconds saved per test), the
    environment for a flow that reports to it, and the time the test began."""
    url = shared_api_url()
    since = datetime.now(UTC).isoformat()
    return SharedServer(url, flow_env(tmp_path), since)
