"""flows/ablations.py as processes on one data folder (issue: a run survives its operators):
a second run on a folder is refused in one line (or waits with --wait) and no work is done twice;
nothing a run started outlives it (kill -9, SIGTERM, SIGINT); an interrupted run says so in one
line with exit status 143 / 130, even during a long backoff, and the next run takes over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from emoface.runlock import pid_alive, read_holder
from tests.conftest import write_small_project_params
from tests.fake_ollama import FakeOllama
from tests.prefect_shared import shared_api_url

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CALLS = 2 * 48 * (3 + 2 + 1) + 48  # --priority 1 on the small project, FER included


def _params(tmp: Path, **inference) -> Path:
    path = write_small_project_params(tmp / "cfg")
    p = yaml.safe_load(path.read_text())
    for section, values in inference.items():
        p["inference"][section].update(values)
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def _start(args: list[str], params: Path, data: Path, tmp: Path, name: str,
           **env_extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"),
               PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp / "prefect-results"),
               DO_NOT_TRACK="1", PYTHONPATH=str(REPO), **env_extra)
    out, err = (tmp / f"{name}.out").open("w"), (tmp / f"{name}.err").open("w")
    return subprocess.Popen([sys.executable, "flows/ablations.py", *args, "--params", str(params),
                             "--data", str(data), "--json"], cwd=REPO, env=env, stdout=out,
                            stderr=err)


def _result(proc: subprocess.Popen, tmp: Path, name: str, timeout: float = 900):
    rc = proc.wait(timeout=timeout)
    lines = [x for x in (tmp / f"{name}.out").read_text().splitlines() if x.startswith("{")]
    return rc, json.loads(lines[-1]) if lines else {}, (tmp / f"{name}.err").read_text()


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := cond()):
            return value
        assert proc.poll() is None, f"the run ended before {what}"
        time.sleep(0.1)
    pytest.fail(f"no {what} within {timeout} s")


def _server_of(proc: subprocess.Popen, data: Path) -> tuple[int, int]:
    """PID and port of the run's temporary Prefect server, once it is up (from the lock file)."""
    def ready():
        h = read_holder(data)
        return (h["server_pid"], h["server_port"]) if h.get("pid") == proc.pid and \
            "server_pid" in h else None
    return _wait_for(ready, proc, "Prefect server")


def _committed(data: Path) -> int:
    return sum(1 for _ in (data / "predictions").rglob("b*.json")) \
        if (data / "predictions").is_dir() else 0


def _left_on_port(port: int) -> list[str]:
    """Processes of this machine serving the test's own port (what a leftover server would be)."""
    out = subprocess.run(["pgrep", "-af", f"--port {port}"], capture_output=True, text=True)
    return [x for x in out.stdout.splitlines() if "pgrep" not in x]


def _gone(pid: int, port: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (pid_alive(pid) or _left_on_port(port)):
        time.sleep(0.1)
    return not pid_alive(pid) and not _left_on_port(port)


def test_a_second_run_is_refused_a_waiting_one_finds_nothing_to_do(tmp_path):
    params = _params(tmp_path, simulated={"latency_s": 0.05, "capacity": 4})
    data = tmp_path / "data"
    first = _start(["--priority", "1"], params, data, tmp_path, "first")
    _server_of(first, data)
    second = _start(["--priority", "1"], params, data, tmp_path, "second")
    rc2, _, err2 = _result(second, tmp_path, "second", timeout=300)
    third = _start(["--priority", "1", "--wait"], params, data, tmp_path, "third")
    _wait_for(lambda: "waiting:" in (tmp_path / "third.err").read_text(), third, "wait line")
    rc1, out1, err1 = _result(first, tmp_path, "first")
    rc3, out3, err3 = _result(third, tmp_path, "third")
    lines = [x for x in err2.splitlines() if x.strip()]
    assert rc2 == 2 and len(lines) == 1 and "Traceback" not in err2, err2
    assert f"PID {first.pid} on " in lines[0] and " since " in lines[0] and "--wait" in lines[0]
    assert rc1 == 0 and out1["calls"] == CALLS, err1[-3000:]
    # the waiting run started once the first was done and found its work stored
    assert rc3 == 0 and out3.get("up_to_date") and out3["calls"] == 0, err3[-3000:]
    assert f"PID {first.pid}" in err3


def test_kill_9_leaves_no_server_and_the_next_run_takes_over(tmp_path):
    params = _params(tmp_path, simulated={"latency_s": 0.05, "capacity": 4})
    data = tmp_path / "data"
    run = _start(["--priority", "1"], params, data, tmp_path, "killed")
    pid, port = _server_of(run, data)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert _gone(pid, port), _left_on_port(port)
    # the run that takes over (its own Prefect server is not under test here: the session's),
    # with the same selection and models but no simulated latency: nothing is killed in it
    quick = _params(tmp_path / "quick")
    again = _start(["--priority", "1"], quick, data, tmp_path, "again",
                   PREFECT_API_URL=shared_api_url())
    rc, out, err = _result(again, tmp_path, "again")
    assert rc == 0 and out["ok"] and out["calls"] <= CALLS, err[-3000:]
    assert read_holder(data) == {}  # released at the end


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_end_the_run_in_one_line_during_a_long_backoff(tmp_path, sig):
    # every chat fails once (a 500) and the backoff before its retry is 30-60 s: the run sits in
    # its backoff when the signal comes
    params = _params(tmp_path, ollama={"backoff_s": 30.0, "retries": 2})
    data = tmp_path / "data"
    with FakeOllama(fail_first=10_000) as server:
        run = _start(["--only", "A5", "--models", "ollama/gemma3:4b"], params, data, tmp_path,
                     "run", OLLAMA_HOST=server.host)
        pid, port = _server_of(run, data)
        _wait_for(lambda: len(server.chat_requests()) >= 4, run, "chat requests")
        time.sleep(1)  # every conversation has failed once and sleeps in its backoff
        sent = len(server.chat_requests())
        run.send_signal(sig)
        # ends long before any backoff is over (a bound for a hang, not a timing)
        rc, _, err = _result(run, tmp_path, "run", timeout=25)
        assert len(server.chat_requests()) == sent  # no retry was sent after the signal
    lines = [x for x in err.splitlines() if "interrupted" in x]
    assert rc == 128 + sig and len(lines) == 1, err[-3000:]
    assert f"interrupted ({signal.Signals(sig).name})" in lines[0] and "resume" in lines[0]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert _gone(pid, port), _left_on_port(port)
