"""Fixtures for the flow tests: a real `prefect server start` on a free loopback port."""

from __future__ import annotations

import pytest

from tests.prefect_shared import free_port, start_prefect_server, stop_process_group

__all__ = ["free_port", "prefect_server"]


@pytest.fixture
def prefect_server(tmp_path):
    """A server of the test's own (its database holds only this test's runs)."""
    proc, url, env = start_prefect_server(tmp_path / "home")
    yield url, env
    stop_process_group(proc)
