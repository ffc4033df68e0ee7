"""scripts/notify_on_failure.py against a real `prefect server start`: a failed flow run makes
the server POST a notification naming the run to the configured webhook."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAILING_FLOW = """
from prefect import flow

@flow(name="doomed", flow_run_name="doomed-run")
def doomed():
    raise ValueError("on purpose")

doomed(return_state=True)
"""


def test_failed_flow_run_sends_a_notification(prefect_server, tmp_path):
    url, env = prefect_server
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        env = dict(env, PREFECT_API_URL=url)
        made = subprocess.run([sys.executable, "scripts/notify_on_failure.py", "--webhook",
                               f"http://127.0.0.1:{hook.server_port}/hook"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr[-2000:]
        assert "notifies on failed or crashed flow runs" in made.stdout
        time.sleep(5)  # the triggers service loads new automations periodically
        subprocess.run([sys.executable, "-c", FAILING_FLOW], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
        deadline = time.time() + 120
        while not received and time.time() < deadline:
            time.sleep(1)
    finally:
        hook.shutdown()
    assert received, "no notification within 120 s of the failed run"
    assert "doomed-run" in received[0]["subject"]
    assert "Failed" in received[0]["body"] and "on purpose" in received[0]["body"]


def test_no_server_is_one_line_and_exit_2():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "scripts/notify_on_failure.py", "--webhook",
                          "http://127.0.0.1:9/x"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "PREFECT_API_URL" in out.stderr
