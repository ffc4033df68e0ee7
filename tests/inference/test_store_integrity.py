"""Never serve stale or damaged work: damaged files, changed batch size or seed, store status/prune.

Each test damages or outdates a store the way a researcher would (a truncated copy, a deleted
file, an edited params.yaml), then checks that the next run redoes exactly the affected batches,
ends with the same rows as a clean run, and that ``emoface store status`` says what it found.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from emoface.ablations import build_plan
from emoface.analysis.context import AnalysisContext
from emoface.cli import app
from emoface.config import load_params
from emoface.errors import DataError
from emoface.inference.service import run_condition_for
from emoface.inference.store import PredictionStore
from emoface.paths import DataPaths
from emoface.planning import summarize
from tests.inference.test_resume import DETERMINISTIC, make_project

MODEL = "simulated/gemma3-4b"


def _run(pfile, data) -> dict:
    return run_condition_for(load_params(pfile), DataPaths(data), MODEL, protocol="context_carry")


def _folder(data):
    return next((data / "predictions/embedded/context_carry_t0_r1").iterdir())


def _rows(pfile, data):
    return PredictionStore(data).read(_folder(data), load_params(pfile).study.emotions) \
        .sort("stimulus_id").select(DETERMINISTIC)


def _status(data) -> tuple[int, list[dict]]:
    res = CliRunner().invoke(app, ["store", "status", "--data", str(data), "--json"])
    return res.exit_code, json.loads(res.stdout)


def _baseline_done(pfile, data) -> int:
    """Calls the dry run counts as already stored for this model's baseline."""
    p = load_params(pfile)
    s = summarize(build_plan(p, ["A8"], [MODEL]), p, DataPaths(data))
    return sum(c["calls_done"] for c in s["conditions"] if c["model_id"] == MODEL)


@pytest.fixture
def project(tmp_path):
    pfile, data = make_project(tmp_path / "p")
    first = _run(pfile, data)
    assert first["batches_run"] == 8 and first["calls"] == 144
    return pfile, data, _rows(pfile, data)


def test_truncated_parquet_dry_run_status_then_exactly_that_batch_redone(project):
    pfile, data, clean = project
    victim = _folder(data) / "b0003.parquet"
    victim.write_bytes(victim.read_bytes()[:200])
    assert _baseline_done(pfile, data) == 144 - 6 * 3  # no traceback; the batch is not done
    code, status = _status(data)
    assert code == 1  # damage found
    assert status[0]["damaged"] == [{"path": str(victim),
                                     "detail": f"size 200 bytes, committed {_size(victim, data)}"}]
    with pytest.raises(DataError, match="b0003: damaged"):
        _rows(pfile, data)
    again = _run(pfile, data)
    assert again["batches_run"] == 1 and again["calls"] == 6 * 3
    assert _rows(pfile, data).equals(clean)
    assert _status(data)[0] == 0


def _size(path, data) -> int:
    record = json.loads(path.with_suffix(".json").read_text())
    return record["files"][path.suffix[1:]]["size"]


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_damaged_logits_are_never_read_and_are_redone(project, damage):
    pfile, data, clean = project
    victim = _folder(data) / "b0005.npz"
    body = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(body[: len(body) // 2])
    elif damage == "delete":
        victim.unlink()
    else:  # same size, other bytes: only the checksum can tell
        victim.write_bytes(body[:-10] + bytes(10))
    ctx = AnalysisContext(load_params(pfile), DataPaths(data), [MODEL])
    with pytest.raises(DataError, match=r"b0005: damaged") as err:
        ctx.logits(MODEL)
    assert str(victim) in str(err.value)
    with pytest.raises(DataError, match=r"b0005: damaged"):  # the rows of that batch neither
        ctx.predictions(MODEL)
    code, status = _status(data)
    assert code == 1 and [d["path"] for d in status[0]["damaged"]] == [str(victim)]
    again = _run(pfile, data)
    assert again["batches_run"] == 1 and again["calls"] == 6 * 3
    assert _rows(pfile, data).equals(clean)
    logits = AnalysisContext(load_params(pfile), DataPaths(data), [MODEL]).logits(MODEL)
    assert len(np.unique(logits["stimulus_id"])) == 48  # every stimulus, none silently dropped


def _edit_params(pfile, **inference) -> None:
    params = yaml.safe_load(pfile.read_text())
    params["inference"].update(inference)
    pfile.write_text(yaml.safe_dump(params))


def test_changed_batch_size_reads_only_current_batches_and_prune_removes_stale(project):
    pfile, data, clean = project
    _edit_params(pfile, batch_size=12)
    assert _baseline_done(pfile, data) == 0  # outdated shards are not counted as done
    again = _run(pfile, data)
    assert again["batches"] == 4 and again["batches_run"] == 4 and again["calls"] == 144
    assert _rows(pfile, data).equals(clean)  # no duplicate rows from the old b0004-b0007
    code, status = _status(data)
    assert code == 0 and status[0]["done"] == 4
    stale = sorted(status[0]["stale"])
    assert stale == sorted(str(_folder(data) / f"b{i:04d}.{s}") for i in range(4, 8)
                           for s in ("json", "npz", "parquet"))
    dry = CliRunner().invoke(app, ["store", "prune", "--data", str(data), "--dry-run"])
    assert dry.exit_code == 0 and "12 stale file(s)" in dry.stdout
    assert all((_folder(data) / f"b{i:04d}.npz").exists() for i in range(4, 8))
    real = CliRunner().invoke(app, ["store", "prune", "--data", str(data)])
    assert real.exit_code == 0 and not any((_folder(data) / f"b{i:04d}.npz").exists()
                                           for i in range(4, 8))
    assert _status(data)[1][0]["stale"] == []
    assert _rows(pfile, data).equals(clean)
    assert _run(pfile, data)["calls"] == 0


def test_changed_seed_redoes_every_batch_and_status_reports_them_stale_until_then(project):
    pfile, data, _ = project
    _edit_params(pfile, seed=99)
    p = load_params(pfile)
    # a plan under the new seed (as a run records it) makes every stored batch outdated
    from emoface.backends import make_backend
    from emoface.inference.conditions import Condition
    from emoface.inference.engine import plan_condition
    from emoface.stimuli.store import load_stimulus_set

    ss = load_stimulus_set(DataPaths(data).stimulus_set("embedded"), p.study)
    backend = make_backend(MODEL, p.inference, emotions=p.study.emotions, stimulus_set=ss)
    plan_condition(backend, ss, Condition(), Condition().options(p.inference),
                   PredictionStore(data), batch_size=p.inference.batch_size)
    code, status = _status(data)
    assert code == 0 and status[0]["done"] == 0 and len(status[0]["stale"]) == 8 * 3
    with pytest.raises(DataError, match="8 of 8 prediction batch.*outdated"):
        _rows(pfile, data)
    again = _run(pfile, data)
    assert again["batches_run"] == 8 and again["calls"] == 144
    assert _status(data)[1][0]["done"] == 8


def test_hidden_states_follow_the_same_rules(project):
    pfile, data, _ = project
    p = load_params(pfile)
    from emoface.backends import make_backend
    from emoface.inference.engine import run_hidden_states
    from emoface.inference.store import HiddenStateStore
    from emoface.stimuli.store import load_stimulus_set

    ss = load_stimulus_set(DataPaths(data).stimulus_set("embedded"), p.study)
    backend = make_backend(MODEL, p.inference, emotions=p.study.emotions, stimulus_set=ss)
    calls = []
    real = backend.hidden_states
    backend.hidden_states = lambda s, prompt: calls.append(s.stimulus_id) or real(s, prompt)
    store = HiddenStateStore(data)

    def extract() -> list:
        calls.clear()
        return run_hidden_states(backend, ss, store, p.study.emotions, batch_size=6)

    layers = extract()
    assert len(calls) == 48 and layers
    reference = AnalysisContext(p, DataPaths(data), [MODEL]).hidden_layers(MODEL)
    assert extract() and calls == []  # nothing changed: nothing extracted
    folder = store.model_dir("embedded", MODEL)
    victim = folder / "b0002.npz"
    victim.write_bytes(victim.read_bytes()[:100])
    code, status = _status(data)
    hidden = next(s for s in status if s["kind"] == "hidden")
    assert code == 1 and hidden["damaged"][0]["path"] == str(victim)
    extract()
    assert len(calls) == 6  # exactly the damaged batch
    layer = folder / "layer_01.npz"
    layer.write_bytes(layer.read_bytes()[:50])
    with pytest.raises(DataError, match="layer_01.npz is damaged"):
        AnalysisContext(p, DataPaths(data), [MODEL]).hidden_layers(MODEL)
    extract()
    assert calls == []  # the layers are re-assembled from the verified batches, no model calls
    again = AnalysisContext(p, DataPaths(data), [MODEL]).hidden_layers(MODEL)
    assert len(again) == len(reference)
    for a, b in zip(again, reference, strict=True):
        assert np.array_equal(a["image_pool"], b["image_pool"])


def test_every_row_and_commit_record_names_the_code(project):
    pfile, data, _ = project
    from emoface.provenance import code_version

    v = code_version()
    rows = PredictionStore(data).read(_folder(data), load_params(pfile).study.emotions)
    assert rows.select("emoface_version", "code_commit", "code_dirty").unique().rows() == [
        (v["package_version"], v["git_commit"], v["git_dirty"])]
    record = json.loads((_folder(data) / "b0000.json").read_text())
    assert record["code"] == v and set(record["files"]) == {"npz", "parquet"}
