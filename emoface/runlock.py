"""One writing run per data folder: an exclusive lock on ``DATA/.run.lock``.

Every command that writes the data folder (``flows/ablations.py``, ``emoface infer``, ``emoface
stimuli generate|import|real-faces``, ``emoface store prune``, and so the DVC stages) holds the
lock for as long as it runs; commands that only read (a dry run, ``emoface store status``,
``emoface stimuli check``) do not take it.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the holder exits in
any way, ``kill -9`` included: a killed run never leaves the folder locked, and the next run
takes it at once. The file holds who holds it (PID, host, start time, command) for the one-line
refusal a second run prints, and the PID and port of the temporary Prefect server the run
started, so that the next run can end a server a dead run left behind (:func:`end_leftover_server`).
A clean end removes the file while still holding it; a run that was waiting on the removed file
notices (another inode, or none, at the path) and locks the file there instead, so two runs never
hold "the" lock at once.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from emoface.errors import EmofaceError

LOCK_NAME = ".run.lock"
#: what the command line of a temporary Prefect server holds (``prefect.server.api.server``)
SERVER_MARK = "prefect.server.api.server:create_app"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]


#: locks this process holds, by lock file (a command run in-process twice reuses its lock)
_HELD: dict[str, RunLock] = {}


class RunLocked(EmofaceError):
    """Another live run holds the data folder."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:  # Linux: a zombie (exited, not yet reaped) is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        pass
    import subprocess

    try:  # macOS and other systems without /proc
        return subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                              text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _describe(info: dict) -> str:
    who = f"PID {info.get('pid', '?')} on {info.get('host', '?')}"
    since = info.get("started")
    cmd = info.get("command")
    return who + (f" since {since}" if since else "") + (f" ({cmd})" if cmd else "")


@dataclass
class RunLock:
    """The held lock of one data folder (see the module docstring). Use :func:`acquire`."""

    path: Path
    fd: int
    info: dict
    #: what the previous holder wrote (it is gone: the lock was free); {} for a fresh file
    previous: dict = field(default_factory=dict)
    #: the data folder did not exist before (removed again on release if still empty)
    created_root: bool = False

    def update(self, **values) -> None:
        """Add ``values`` to the record in the lock file (e.g. the Prefect server's PID)."""
        self.info.update(values)
        self._write()

    def _write(self) -> None:
        data = (json.dumps(self.info, indent=1) + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def release(self) -> None:
        if self.fd < 0:
            return
        # a clean end leaves nothing behind: the file is removed while still locked (a run
        # waiting on it then sees another inode, or none, and locks the file there anew)
        _remove_empty(self.path.parent if self.created_root else None, self.path)
        os.close(self.fd)  # closing the only descriptor releases the flock
        self.fd = -1
        _HELD.pop(str(self.path.resolve()), None)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held_locks() -> dict[str, RunLock]:
    """The locks this process holds now, by lock file."""
    return {k: v for k, v in _HELD.items() if v.fd >= 0}


def _remove_empty(root: Path | None, path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
        if root is not None:
            root.rmdir()  # only if empty: a folder this command created for nothing
    except OSError:
        pass


def read_holder(data_root: Path) -> dict:
    """What the lock file says (the current or the last holder); {} if none or unreadable."""
    try:
        return json.loads((Path(data_root) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def acquire(data_root: Path, *, command: str | None = None, wait: bool = False,
            on_wait=None, poll_s: float = 0.5) -> RunLock:
    """Lock ``data_root`` for this process or raise :class:`RunLocked` naming the holder.

    With ``wait``, block until the holder is done (``on_wait(holder_info)`` is called once, e.g.
    to print that it waits); polled, so signals still reach the process.
    """
    root = Path(data_root)
    if root.exists() and not root.is_dir():
        raise EmofaceError(f"--data {root}: not a folder")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    held = _HELD.get(str(path.resolve()))
    if held is not None and held.fd >= 0:
        return held  # this process holds it already (one command calling another)
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            while fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = read_holder(root)
                    if not wait:
                        raise RunLocked(
                            f"{root} is in use by another run: {_describe(holder)}; wait for it "
                            "to finish and run this again, or add --wait to start as soon as it "
                            "ends") from None
                    if not waited and on_wait is not None:
                        on_wait(holder)
                    waited = True
                    time.sleep(poll_s)
            # a holder that ended cleanly removed the file it locked: lock the one there now
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                previous = json.loads(os.pread(fd, 1 << 16, 0).decode() or "{}")
                if not isinstance(previous, dict):
                    previous = {}
            except ValueError:
                previous = {}
            break
        except BaseException:
            os.close(fd)
            if created:
                _remove_empty(root, path)
            raise
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
    }
    lock = RunLock(path, fd, info, previous, created)
    lock._write()
    _HELD[str(path.resolve())] = lock
    atexit.register(lock.release)  # a clean exit clears the record (a crash: the kernel unlocks)
    return lock


def end_leftover_server(previous: dict, *, timeout_s: float = 5.0) -> int | None:
    """End the temporary Prefect server a dead run recorded in the lock file, if it still runs
    on this machine (its command line must be that server's, on the recorded port, so a reused
    PID is never touched). Returns the PID it ended, or None."""
    pid, port = previous.get("server_pid"), previous.get("server_port")
    if not isinstance(pid, int) or previous.get("host") != socket.gethostname():
        return None
    if pid == os.getpid() or not pid_alive(pid):
        return None
    cmd = _cmdline(pid)
    if SERVER_MARK not in cmd or (port is not None and f"--port {port}" not in cmd):
        return None
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return pid
