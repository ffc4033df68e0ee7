"""The stimulus-set race (real processes): a sweep never touches the temporary folder a live
process is building, a dead writer's leftovers are swept, and a set is swapped in only when it
is complete and verified against its manifest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emoface.errors import DataError
from emoface.io import sweep_temporaries, write_bytes
from emoface.paths import StimulusSetPaths
from emoface.stimuli.store import load_stimulus_set, replace_set

REPO = Path(__file__).resolve().parents[2]

# builds a copy of a set in a child process, pausing half-way until the test says go
BUILDER = """
import shutil, sys, time
from pathlib import Path
from emoface.paths import StimulusSetPaths
from emoface.stimuli.store import replace_set
src, dst, go = Path(sys.argv[1]), StimulusSetPaths(Path(sys.argv[2])), Path(sys.argv[3])
files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
with replace_set(dst) as tmp:
    for i, rel in enumerate(files):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, tmp / rel)
        if i == len(files) // 2:
            print(tmp, flush=True)
            while not go.exists():
                time.sleep(0.05)
print("committed", flush=True)
"""


def test_a_sweep_leaves_a_live_build_alone_and_the_set_commits_complete(small_set, small_params,
                                                                        tmp_path):
    stimuli = tmp_path / "stimuli"
    go = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(small_set.root),
                             str(stimuli / "small"), str(go)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.parent == stimuli and tmp.name.endswith(".tmp") and f"pid{proc.pid}" in tmp.name
        n_before = sum(1 for _ in tmp.rglob("*"))
        # what a second run does before it starts: the live build is not touched
        assert sweep_temporaries([stimuli]) == 0
        assert tmp.is_dir() and sum(1 for _ in tmp.rglob("*")) == n_before
        go.touch()
        assert proc.stdout.readline().strip() == "committed"
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    s = load_stimulus_set(StimulusSetPaths(stimuli / "small"), small_params.study)
    assert s.manifest.height == 48 and not tmp.exists()


def test_a_dead_writers_leftovers_are_swept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "stimuli"
    left = folder / f".embedded.pid{dead.pid}.abc123.tmp"
    (left / "images").mkdir(parents=True)
    (left / "images" / "x.png").write_bytes(b"x")
    old_style = folder / ".b0001.parquet.k3j2.tmp"  # a name without a PID (older versions)
    old_style.write_bytes(b"y")
    assert sweep_temporaries([folder]) == 2
    assert not left.exists() and not old_style.exists()


def test_an_incomplete_build_is_never_committed(small_set, small_params, tmp_path):
    import shutil

    out = StimulusSetPaths(tmp_path / "stimuli" / "small")
    shutil.copytree(small_set.root, out.root)
    before = sorted(p.name for p in out.images.iterdir())
    with pytest.raises(DataError, match="not committed.*image file not found"):
        with replace_set(out) as tmp:
            shutil.copytree(small_set.root, tmp, dirs_exist_ok=True)
            next((tmp / "images").iterdir()).unlink()  # e.g. removed by someone else's sweep
    with pytest.raises(DataError, match="not committed.*content hash"):
        with replace_set(out) as tmp:
            shutil.copytree(small_set.root, tmp, dirs_exist_ok=True)
            write_bytes(b"not the image", next((tmp / "images").iterdir()))
    with pytest.raises(DataError, match="manifest.csv was not written"):
        with replace_set(out) as tmp:
            (tmp / "images").mkdir()
    # the committed set is the earlier one, complete; nothing temporary is left
    assert sorted(p.name for p in out.images.iterdir()) == before
    assert load_stimulus_set(out, small_params.study).manifest.height == 48
    assert [p.name for p in out.root.parent.iterdir()] == ["small"]
