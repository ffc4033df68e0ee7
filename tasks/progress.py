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
                   TimeRemainingColumn(), transient=True)
    bar.start()
    _state.update(bar=bar, task=bar.add_task(description, total=total))


def advance(n: int = 1) -> None:
    with _lock:
        if "bar" in _state:
            _state["bar"].advance(_state["task"], n)


def stop() -> None:
    with _lock:
        bar = _state.pop("bar", None)
        _state.clear()
    if bar is not None:
        bar.stop()
