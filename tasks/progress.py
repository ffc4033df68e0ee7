"""A rich progress bar for inference when run from a terminal (off otherwise).

The flow script starts it; tasks advance it. Nothing happens at import.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_state: dict = {}


def start(total: int, description: str) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), "{task.fields[retries]}", transient=True)
    bar.start()
    _state.update(bar=bar, task=bar.add_task(description, total=total, retries=""), retries=0)


def advance(n: int = 1) -> None:
    with _lock:
        if "bar" in _state:
            _state["bar"].advance(_state["task"], n)


def retried() -> None:
    """Count one retried backend request (shown as "N retries" beside the bar)."""
    with _lock:
        if "bar" in _state:
            _state["retries"] += 1
            n = _state["retries"]
            _state["bar"].update(_state["task"], retries=f"{n} {'retry' if n == 1 else 'retries'}")


def stop() -> None:
    with _lock:
        bar = _state.pop("bar", None)
        _state.clear()
    if bar is not None:
        bar.stop()
