"""What a run starts, it ends: the temporary Prefect server and signal handling.

**The server.** Without ``PREFECT_API_URL``, Prefect would start its own temporary server
(``SubprocessASGIServer``: ``python -m uvicorn --factory prefect.server.api.server:create_app``)
as a plain child that only an ``atexit`` handler stops, so ``kill -9`` or ``SIGTERM`` of the flow
orphaned it. :class:`RunServer` starts the same command itself, with the same settings
(``PREFECT__SERVER_EPHEMERAL``, no UI, 127.0.0.1, a free port), points ``PREFECT_API_URL`` at it,
and ties it to the run: on Linux the kernel kills it when the run dies in any way
(``PR_SET_PDEATHSIG``); it runs in its own session, so a Ctrl-C in the terminal reaches only the
run (which records the interruption there before the server stops); its PID and port go into the
data folder's lock file, so the next run ends a server a dead run left behind on systems without
a parent-death signal (macOS).

**Signals.** SIGINT and SIGTERM end the run in seconds: a stop request (:mod:`emoface.stop`)
wakes every backoff sleep and starts no new conversation, the flow unwinds (Prefect marks the
run crashed), batches in flight are committed or left for the resume, the server stops, one line
says ``interrupted``, and the exit status is 130 (SIGINT) or 143 (SIGTERM), without a traceback.
Prefect replaces the SIGTERM handler while a flow runs, so the stop request is raised from a
wake-up pipe (``signal.set_wakeup_fd``) that every signal reaches whoever handles it. If the
run has not ended ``GRACE_S`` after the signal, it stops the server and exits anyway.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from emoface import stop
from emoface.runlock import SERVER_MARK

GRACE_S = 8.0
PR_SET_PDEATHSIG = 1
_MESSAGE = ("interrupted ({name}): finished batches are kept; run the same command again to "
            "resume")


def _libc_prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except OSError:
        return None


def tied_to_this_process():
    """A ``preexec_fn`` for ``subprocess.Popen``: the child is killed (SIGKILL) when the process
    that started it dies, however it dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a no-op), and
    starts with no signal blocked."""
    prctl, parent = _libc_prctl(), os.getpid()

    def tie_to_parent() -> None:  # runs in the child between fork and exec
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the line above
                os._exit(1)

    return tie_to_parent


class RunServer:
    """A temporary Prefect API server owned by this process (see the module docstring)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _command(self, port: int) -> list[str]:
        spec = importlib.util.find_spec("prefect")
        app_dir = Path(spec.origin).parent.parent  # what Prefect passes: the package's parent
        return [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
                SERVER_MARK, "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
                "--lifespan", "on"]

    def _spawn(self, port: int) -> subprocess.Popen:
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        return subprocess.Popen(self._command(port), env=env, stdin=subprocess.DEVNULL,
                                preexec_fn=tied_to_this_process(), start_new_session=True)

    def start(self, timeout_s: float) -> str:
        """Start it and wait until it answers ``/health``; returns the API URL."""
        import httpx

        deadline = time.monotonic() + timeout_s
        for _ in range(3):  # a port taken between choosing and binding: try another
            self.port = _free_port()
            self.proc = self._spawn(self.port)
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                        return self.api_url
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            if time.monotonic() >= deadline:
                break
        code = self.proc.poll()
        self.stop()
        raise RuntimeError(
            "the temporary Prefect server " + (f"exited with status {code}" if code is not None
                                                else f"did not answer within {timeout_s:.0f} s")
            + "; start one with `prefect server start` and set PREFECT_API_URL")

    def stop(self, timeout_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``: by now the run has recorded its states
        (Prefect's exit handlers ran first), and its database commits are atomic."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SERVER: RunServer | None = None


def start_server(on_started=None) -> str | None:
    """Start this run's temporary server unless ``PREFECT_API_URL`` names one; sets
    ``PREFECT_API_URL`` (call before Prefect is imported). ``on_started(pid, port)`` records it."""
    global _SERVER
    if os.environ.get("PREFECT_API_URL"):
        return None
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
    print("Starting this run's temporary Prefect server on 127.0.0.1 (it stops with the run)",
          file=sys.stderr)
    _SERVER = RunServer()
    url = _SERVER.start(timeout)
    # stopped at exit after Prefect's own exit handlers (registered later, run earlier) have
    # sent their last logs and states
    atexit.register(stop_server)
    os.environ["PREFECT_API_URL"] = url
    if on_started is not None:
        on_started(_SERVER.proc.pid, _SERVER.port)
    return url


def stop_server(*, drain: bool = True) -> None:
    """Stop this run's server, after sending Prefect's last queued logs to it (the standard
    library flushes logging handlers only after every other exit handler, when the server would
    be gone: seconds of retries against a closed port)."""
    if _SERVER is None:
        return
    if drain and "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        try:
            APILogWorker.drain_all(timeout=5)
        except Exception:  # noqa: BLE001 - the logs are a convenience; the run is over
            pass
    _SERVER.stop()


# --- signals ----------------------------------------------------------------------------------
_state: dict = {"signum": None, "printed": False}
_print_lock = threading.Lock()


def _say_interrupted(signum: int) -> None:
    with _print_lock:
        if _state["printed"]:
            return
        _state["printed"] = True
        try:
            from tasks import progress

            progress.stop()
        except Exception:  # noqa: BLE001 - the bar is cosmetic
            pass
        print(_MESSAGE.format(name=signal.Signals(signum).name), file=sys.stderr, flush=True)


def _request_stop(signum: int) -> None:
    """First SIGINT/SIGTERM: stop work in flight and arm the watchdog (once)."""
    with _print_lock:
        if _state["signum"] is not None:
            return
        _state["signum"] = signum
    stop.STOP.set()

    def watchdog() -> None:
        time.sleep(GRACE_S)
        _say_interrupted(signum)
        stop_server(drain=False)
        os._exit(128 + signum)

    threading.Thread(target=watchdog, name="interrupt-watchdog", daemon=True).start()


def _handler(signum, _frame) -> None:
    _request_stop(signum)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the watchdog ends a run that does not unwind
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT and SIGTERM as described in the module docstring (main thread only)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread: the handlers above still work
        os.close(r)
        os.close(w)
        return

    def watch() -> None:
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in (signal.SIGINT, signal.SIGTERM):
                    _request_stop(signum)

    threading.Thread(target=watch, name="signal-watch", daemon=True).start()


def interrupted_exit(exc: BaseException) -> int:
    """The one line and the exit status for an interrupted run (KeyboardInterrupt, or Prefect's
    TerminationSignal)."""
    signum = _state["signum"] or getattr(exc, "signal", None) or signal.SIGINT
    _request_stop(signum)
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except ValueError:
            pass
    _say_interrupted(signum)
    return 128 + signum


def run_main(main) -> int:
    """Run the entry point's ``main`` with an interruption ending in one line and 130/143, and
    exit as soon as the run is done (see :func:`exit_now`)."""
    install()
    try:
        code = main()
    except BaseException as exc:
        # Prefect's TerminationSignal is matched by name: Prefect may not be imported yet, and
        # importing it before the run's server has started would miss PREFECT_API_URL
        if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TerminationSignal":
            code = interrupted_exit(exc)
        else:
            raise
    exit_now(code)


def exit_now(code: int) -> None:
    """What interpreter exit does, less tearing down every loaded module (seconds with the FER
    classifier's TensorFlow Lite loaded): wait for the threads that still work, run the exit
    handlers (Prefect's last logs and states, then the server's stop, then the lock), flush, go."""
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 1)
