"""Atomic writes honour the umask; the sweep removes what a killed writer left, nothing else."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import polars as pl
import pytest

from emoface.io import atomic_dir, current_umask, sweep_temporaries, write_csv


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    current_umask.cache_clear()
    yield
    os.umask(old)
    current_umask.cache_clear()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_writes_honour_the_umask(tmp_path, umask_022):
    # mkstemp/mkdtemp alone give 0600 / 0700: on a shared lab machine nobody else could read them
    write_csv(pl.DataFrame({"a": [1]}), tmp_path / "t.csv")
    assert _mode(tmp_path / "t.csv") == 0o644
    with atomic_dir(tmp_path / "set") as tmp:
        (tmp / "f.txt").write_text("x")
    assert _mode(tmp_path / "set") == 0o755 and _mode(tmp_path / "set" / "f.txt") == 0o644


def test_group_umask_is_honoured_too(tmp_path):
    old = os.umask(0o007)
    current_umask.cache_clear()
    try:
        write_csv(pl.DataFrame({"a": [1]}), tmp_path / "t.csv")
        assert _mode(tmp_path / "t.csv") == 0o660
    finally:
        os.umask(old)
        current_umask.cache_clear()


def test_sweep_removes_leftovers_everywhere_and_keeps_results(tmp_path):
    results = tmp_path / "results" / "A1" / "tables"
    results.mkdir(parents=True)
    (results / "main.csv").write_text("kept")
    (results / ".main.csv.abc123.tmp").write_text("half")
    (tmp_path / "results" / ".report.md.x.tmp").write_text("half")
    stimuli = tmp_path / "stimuli"
    (stimuli / ".mine.q.tmp" / "images").mkdir(parents=True)
    (stimuli / "other").mkdir()
    (stimuli / "other" / "manifest.csv").write_text("new")
    (stimuli / ".other.old-123").mkdir()
    # a kill between the two renames of a swap: the set aside is the only copy, so it comes back
    (stimuli / ".lost.old-456").mkdir()
    (stimuli / ".lost.old-456" / "manifest.csv").write_text("only copy")
    n = sweep_temporaries([tmp_path / "results", stimuli, tmp_path / "absent"])
    assert n == 4
    assert (results / "main.csv").read_text() == "kept"
    assert sorted(p.name for p in stimuli.iterdir()) == ["lost", "other"]
    assert (stimuli / "lost" / "manifest.csv").read_text() == "only copy"
    assert not list((tmp_path / "results").rglob("*.tmp"))
