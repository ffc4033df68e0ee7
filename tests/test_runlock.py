"""One writing run per data folder (emoface.runlock), with real processes: a live holder refuses
a second one in one line, a killed holder (kill -9) leaves nothing stuck, and a temporary Prefect
server a dead run left behind is ended by the next one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from emoface.runlock import SERVER_MARK, RunLocked, acquire, end_leftover_server, pid_alive

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from emoface.runlock import acquire
lock = acquire(sys.argv[1], command="holder for a test")
print("locked", flush=True)
time.sleep(600)
"""


def _holder(data: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(data)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_holder_refuses_a_second_run_then_kill_9_frees_the_folder(tmp_path):
    data = tmp_path / "data"
    holder = _holder(data)
    try:
        with pytest.raises(RunLocked) as err:
            acquire(data)
        msg = str(err.value)
        assert "\n" not in msg
        assert f"PID {holder.pid} on {socket.gethostname()} since " in msg
        assert "holder for a test" in msg and "--wait" in msg
        # the record a second run reads is the holder's own
        assert json.loads((data / ".run.lock").read_text())["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the lock with the process: taken at once, the dead holder reported
    with acquire(data, command="next") as lock:
        assert lock.previous["pid"] == holder.pid
        assert json.loads((data / ".run.lock").read_text())["pid"] == os.getpid()
    assert not (data / ".run.lock").exists()  # a clean end leaves nothing behind


def test_wait_blocks_until_the_holder_is_gone(tmp_path):
    data = tmp_path / "data"
    holder = _holder(data)
    seen = []

    def on_wait(info):
        seen.append(info["pid"])
        holder.send_signal(signal.SIGTERM)  # the holder ends while we wait

    with acquire(data, wait=True, on_wait=on_wait, poll_s=0.05) as lock:
        assert seen == [holder.pid] and lock.info["pid"] == os.getpid()
    holder.wait()


def test_a_server_left_behind_by_a_dead_run_is_ended_and_a_reused_pid_is_not(tmp_path):
    port = 45678
    # a stand-in with the command line of Prefect's temporary server on the recorded port
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                             "--factory", SERVER_MARK, "--port", str(port)])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        host = socket.gethostname()
        # a PID that now belongs to an unrelated process is left alone
        assert end_leftover_server({"host": host, "server_pid": other.pid,
                                    "server_port": port}) is None
        assert end_leftover_server({"host": host, "server_pid": fake.pid,
                                    "server_port": port + 1}) is None  # another port
        assert end_leftover_server({"host": "elsewhere", "server_pid": fake.pid,
                                    "server_port": port}) is None  # another machine
        assert pid_alive(fake.pid) and pid_alive(other.pid)
        assert end_leftover_server({"host": host, "server_pid": fake.pid,
                                    "server_port": port}) == fake.pid
        fake.wait(timeout=10)
        assert not pid_alive(fake.pid) and pid_alive(other.pid)
    finally:
        for p in (fake, other):
            p.kill()
            p.wait()


def test_read_only_commands_do_not_take_the_lock(tmp_path):
    data = tmp_path / "data"
    holder = _holder(data)
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        status = subprocess.run([sys.executable, "-m", "emoface", "store", "status", "--data",
                                 str(data)], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=120)
        assert status.returncode == 0, status.stderr
        infer = subprocess.run([sys.executable, "-m", "emoface", "infer", "--data", str(data)],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert infer.returncode == 2 and f"PID {holder.pid}" in infer.stderr, infer.stderr
        assert "Traceback" not in infer.stderr
    finally:
        holder.kill()
        holder.wait()
