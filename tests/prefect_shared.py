"""One real `prefect server start` for the whole test session, started on first use.

Without ``PREFECT_API_URL`` every `flows/ablations.py` subprocess starts Prefect's temporary
server (tens of seconds cold, 60-90 s on a loaded machine); the suite ran about twenty. Flow
tests share this one instead, through :func:`flow_env`. Tests about the temporary server itself
(that it starts, stops and leaves nothing behind) ask for it with ``temporary_server=True``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from flows.runtime import tied_to_this_process

_SERVER: dict = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """A `prefect server start` on a free loopback port, healthy; (process, api url, its env)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=tied_to_this_process())  # a killed pytest leaves no server
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url, env
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    stop_process_group(proc)
    raise RuntimeError("prefect server did not become healthy in 180 s")


def stop_process_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


def shared_api_url() -> str:
    """The session's Prefect API (started on the first call, stopped at the end of the session)."""
    if "url" not in _SERVER:
        home = Path(tempfile.mkdtemp(prefix="emoface-prefect-"))
        proc, url, _ = start_prefect_server(home)
        _SERVER.update(proc=proc, url=url)
    return _SERVER["url"]


def stop_shared_server() -> None:
    proc = _SERVER.pop("proc", None)
    _SERVER.pop("url", None)
    if proc is not None:
        stop_process_group(proc)


def flow_env(tmp: Path, *, temporary_server: bool = False, **extra: str) -> dict[str, str]:
    """This environment for a flow subprocess: Prefect state under ``tmp``, no Ollama host, and
    the session's shared Prefect server (or none: Prefect's temporary one)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_API") and k != "OLLAMA_HOST"}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), DO_NOT_TRACK="1",
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp / "prefect-results"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if not temporary_server:
        env["PREFECT_API_URL"] = shared_api_url()
    env.update(extra)
    return env
