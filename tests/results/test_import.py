"""emoface results import: mapping, parser and digit merge, store batches, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from emoface.backends import make_backend
from emoface.cli import app
from emoface.config import load_params
from emoface.errors import ConfigError, DataError
from emoface.inference.conditions import Condition
from emoface.inference.engine import pending_specs, plan_condition
from emoface.inference.store import PredictionStore
from emoface.io import sha256_file
from emoface.paths import DataPaths
from emoface.results.importing import parse_condition, run_import
from emoface.results.mapping import load_mapping
from emoface.stimuli.store import load_stimulus_set
from tests.results.conftest import MODEL

ISSUE_MAP = """\
predictions:
  format: jsonl
  stimulus: {field: img, match: file_name}   # or match: stimulus_id | sha256
  label: pred_label
  valence: val
  arousal: aro
  raw: response                              # optional
logits:
  per: stimulus            # one NPZ per stimulus, named after the image file's stem
  tokens: tokens           # array [steps, k] of token strings
  values: probs            # array [steps, k]
  values_are: probabilities
  step_names: fields       # array [steps] naming each step: valence | arousal | other
"""


def _params(native_store):
    return load_params(native_store[0])


def _import(native_store, fresh, plan, **kw):
    args = dict(predictions=plan["predictions"], mapping_file=plan["map"], logits=plan["logits"],
                model_id=MODEL)
    args.update(kw)
    return run_import(_params(native_store), DataPaths(fresh), **args)


def _nothing_written(fresh: Path) -> bool:
    return not (fresh / "predictions").exists() or not any((fresh / "predictions").rglob("*"))


def test_the_issue_mapping_is_accepted_as_written(tmp_path):
    (tmp_path / "m.yaml").write_text(ISSUE_MAP)
    m = load_mapping(tmp_path / "m.yaml")
    assert (m.predictions.stimulus.field, m.predictions.stimulus.match) == ("img", "file_name")
    assert (m.predictions.label, m.predictions.valence, m.predictions.arousal,
            m.predictions.raw) == ("pred_label", "val", "aro", "response")
    assert (m.logits.per, m.logits.tokens, m.logits.values, m.logits.values_are,
            m.logits.step_names) == ("stimulus", "tokens", "probs", "probabilities", "fields")


@pytest.mark.parametrize("text, message", [
    (ISSUE_MAP.replace("  raw: response", "  raww: response"), "predictions.raww: unknown key"),
    (ISSUE_MAP.replace("format: jsonl", "format: xlsx"), "predictions.format: Input should be"),
    (ISSUE_MAP.replace("  tokens: tokens ", "  token_ids: ids "), "token_ids needs vocab"),
    (ISSUE_MAP.replace("  step_names: fields ", "  # "), "say which step is which"),
    ("predictions: {format: csv}\n", "predictions.stimulus: Field required"),
])
def test_a_bad_mapping_names_file_and_key(tmp_path, text, message):
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_mapping(tmp_path / "m.yaml")
    assert str(tmp_path / "m.yaml") in str(err.value)


def test_condition_ids():
    assert parse_condition("context_carry_t0_r1") == Condition()
    assert parse_condition("text_only-baseline_t0_r1").label_source == "baseline"
    assert parse_condition("context_carry_t0.7_r2").temperature == 0.7
    for bad in ("baseline", "context_carry_t0_r2", "text_only_t0_r1"):
        with pytest.raises(DataError, match="--condition"):
            parse_condition(bad)


def test_import_stores_batches_the_planner_takes_for_done(native_store, lab, fresh):
    folder_lab, plans = lab
    p = _params(native_store)
    rep = _import(native_store, fresh, plans[MODEL])
    assert rep.written and rep.matched == 48 and not rep.unmatched
    store = PredictionStore(fresh)
    folder = store.condition_dir("embedded", "context_carry_t0_r1", MODEL)
    rows = store.read(folder, p.study.emotions)  # verified and validated like native batches
    assert rows.height == 48 and (rows["source"] == "imported").all()
    src = plans[MODEL]["predictions"]
    assert set(rows["source_sha256"]) == {sha256_file(src)}
    assert set(rows["mapping_sha256"]) == {sha256_file(plans[MODEL]["map"])}
    assert set(rows["source_file"]) == {str(src.resolve())}

    # same parsed values and statuses as the native answers they came from
    native = store.__class__(native_store[1]).read(
        store.condition_dir("embedded", "context_carry_t0_r1", MODEL), p.study.emotions)
    cols = ["stimulus_id", "emotion", "emotion_status", "valence", "valence_status", "arousal",
            "arousal_status"]
    assert rows.select(cols).sort("stimulus_id").equals(native.select(cols).sort("stimulus_id"))
    # digit log-probabilities: log of the lab's probabilities gives back the stored ones exactly
    a, b = store.read_logits(folder), PredictionStore(native_store[1]).read_logits(
        store.condition_dir("embedded", "context_carry_t0_r1", MODEL))
    keep = np.isin(b["field"], ("valence", "arousal"))
    order_a = np.lexsort((a["field"], a["stimulus_id"]))
    order_b = np.lexsort((b["field"][keep], b["stimulus_id"][keep]))
    assert np.array_equal(a["digit_logprobs"][order_a], b["digit_logprobs"][keep][order_b],
                          equal_nan=True)
    assert np.array_equal(a["digit_mass"][order_a], b["digit_mass"][keep][order_b])

    # the planner takes the imported keys: nothing pending, so no backend call
    ss = load_stimulus_set(DataPaths(fresh).stimulus_set("embedded"), p.study)
    backend = make_backend(MODEL, p.inference, emotions=p.study.emotions, stimulus_set=ss)
    specs = plan_condition(backend, ss, Condition(), Condition().options(p.inference), store,
                           batch_size=p.inference.batch_size)
    assert len(specs) == 2 and pending_specs(specs, store) == []

    # a changed source file makes the import stale: the planner refuses, naming it
    shutil.copy(src, src.with_suffix(".bak"))
    try:
        with open(src, "a") as fh:
            fh.write("\n")
        with pytest.raises(DataError, match="stale: .*predictions.jsonl changed"):
            plan_condition(backend, ss, Condition(), Condition().options(p.inference), store,
                           batch_size=p.inference.batch_size)
    finally:
        shutil.move(src.with_suffix(".bak"), src)


def _copy_plan(plan, tmp: Path) -> dict:
    """A private copy of one model's lab files (tests that damage them)."""
    out = tmp / "labcopy"
    shutil.copytree(Path(plan["predictions"]).parent, out)
    shutil.copy(plan["map"], tmp / "map.yaml")
    shutil.copy(Path(plan["map"]).parent / "vocab.json", tmp / "vocab.json")
    return {"predictions": out / Path(plan["predictions"]).name, "map": tmp / "map.yaml",
            "logits": str(out / "logits" / "*.npz")}


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_unmatched_stimuli_are_listed_or_counted(native_store, lab, fresh, tmp_path):
    plan = _copy_plan(lab[1][MODEL], tmp_path)
    rows = _lines(plan["predictions"])
    rows[3]["img"] = "nobody.png"
    rows[7]["img"] = "nobody_else.png"
    _write_lines(plan["predictions"], rows)
    with pytest.raises(DataError, match=r"2 row\(s\) match no image .*line 4: 'nobody.png'; "
                                        r"line 8: 'nobody_else.png'.*--allow-missing"):
        _import(native_store, fresh, plan)
    assert _nothing_written(fresh)
    rep = _import(native_store, fresh, plan, allow_missing=True)
    assert rep.written and rep.matched == 46 and len(rep.unmatched) == 2


@pytest.mark.parametrize("case", ["duplicate", "rating", "missing_field"])
def test_bad_rows_are_refused_naming_file_line_field(native_store, lab, fresh, tmp_path, case):
    plan = _copy_plan(lab[1][MODEL], tmp_path)
    plan["map"].write_text(plan["map"].read_text().replace("  out_of_range: keep\n", ""))
    rows = _lines(plan["predictions"])
    rows = [r for r in rows if r["aro"] != "10"]  # the native "10": refused without keep
    if case == "duplicate":
        rows.insert(5, dict(rows[2]))
        match = r"predictions.jsonl, row 6, field 'img': duplicate: stimulus .* already on line 3"
    elif case == "rating":
        rows[4]["val"] = 12
        match = r"predictions.jsonl, row 5, field 'val': rating 12 is outside 1-9"
    else:
        del rows[9]["aro"]
        match = (r"predictions.jsonl, row 10, field 'aro': no field 'aro' \(named by mapping key "
                 r"predictions.arousal\)")
    _write_lines(plan["predictions"], rows)
    with pytest.raises(DataError, match=match):
        _import(native_store, fresh, plan, allow_missing=True)
    assert _nothing_written(fresh)


def test_a_label_outside_the_six_is_kept_not_usable(native_store, lab, fresh, tmp_path):
    plan = _copy_plan(lab[1][MODEL], tmp_path)
    rows = _lines(plan["predictions"])
    rows[0]["pred_label"] = "contempt"
    _write_lines(plan["predictions"], rows)
    rep = _import(native_store, fresh, plan, dry_run=True)
    assert rep.out_of_set == 1 and rep.unusable >= 1 and not rep.written
    assert _nothing_written(fresh)


@pytest.mark.parametrize("case", ["shape", "sum", "vocab", "array"])
def test_bad_npz_is_refused(native_store, lab, fresh, tmp_path, case):
    plan = _copy_plan(lab[1][MODEL], tmp_path)
    npz = sorted(Path(plan["predictions"]).parent.joinpath("logits").glob("*.npz"))[6]
    a = dict(np.load(npz))
    if case == "shape":
        a["probs"] = a["probs"][:, :-1]
        match = r"arrays disagree in shape: probs \(3, 8\) vs ids \(3, 9\)"
    elif case == "sum":
        a["probs"][1, :2] = 0.7
        match = r"step 1: probabilities must be >= 0 and sum to <= 1"
    elif case == "vocab":
        a["ids"][2, 0] = 999
        match = r"step 2: token id 999 is not in the vocab"
    else:
        a["steps"] = a.pop("fields")
        match = r"no array 'fields' \(mapping key logits.step_names"
    np.savez(npz, **a)
    with pytest.raises(DataError, match=match) as err:
        _import(native_store, fresh, plan)
    assert str(npz) in str(err.value)
    assert _nothing_written(fresh)


def test_dry_run_counts_low_digit_mass(native_store, lab, fresh, tmp_path):
    plan = _copy_plan(lab[1][MODEL], tmp_path)
    npz = sorted(Path(plan["predictions"]).parent.joinpath("logits").glob("*.npz"))[0]
    a = dict(np.load(npz))
    a["probs"][1] = a["probs"][1] * 0.1  # the valence step's digits now hold < 0.1
    np.savez(npz, **a)
    rep = _import(native_store, fresh, plan, dry_run=True)
    assert (rep.matched, rep.steps, rep.steps_low_mass) == (48, 96, 1)
    assert _nothing_written(fresh)


def test_one_npz_for_all_tokens_logprobs_positions_parquet(native_store, lab, fresh, tmp_path):
    """Other forms: Parquet matched by stimulus id, one NPZ for all entries with token strings and
    log-probabilities, the rating steps given by position."""
    p = _params(native_store)
    plan = lab[1][MODEL]
    rows = _lines(plan["predictions"])
    ids = [Path(r["img"]).stem for r in rows]
    pl.DataFrame({"sid": ids, "label": [r["pred_label"] for r in rows],
                  "v": [r["val"] for r in rows], "a": [r["aro"] for r in rows]}
                 ).write_parquet(tmp_path / "answers.parquet")
    # two steps per answer, [valence, arousal]: 7 is certain for valence; "7" + " 7" for arousal
    tokens = np.array([[["7", "8", "x"], ["7", " 7", "8"]]] * 48)
    with np.errstate(divide="ignore"):
        lps = np.log(np.array([[[1.0, 0.0, 0.0], [0.5, 0.25, 0.125]]] * 48))
    np.savez(tmp_path / "all.npz", stim=np.array(ids), tok=tokens, lp=lps)
    (tmp_path / "map.yaml").write_text(
        "predictions:\n  format: parquet\n  stimulus: {field: sid, match: stimulus_id}\n"
        "  label: label\n  valence: v\n  arousal: a\n  out_of_range: keep\n"
        "logits:\n  per: all\n  stimulus: stim\n  tokens: tok\n  values: lp\n"
        "  values_are: logprobs\n  valence_step: 0\n  arousal_step: 1\n")
    rep = run_import(p, DataPaths(fresh), predictions=tmp_path / "answers.parquet",
                     mapping_file=tmp_path / "map.yaml", logits=str(tmp_path / "all.npz"),
                     model_id=MODEL)
    assert rep.written and rep.matched == 48
    lg = PredictionStore(fresh).read_logits(
        PredictionStore(fresh).condition_dir("embedded", "context_carry_t0_r1", MODEL))
    aro = lg["digit_logprobs"][lg["field"] == "arousal"][0]
    # "7" and " 7" merged: log(0.5 + 0.25); "8": log(0.125); the others are not in the top-k
    assert aro[6] == pytest.approx(np.log(0.75), abs=1e-15)
    assert aro[7] == pytest.approx(np.log(0.125), abs=1e-15)
    assert np.isnan(aro[[0, 1, 2, 3, 4, 5, 8]]).all()
    assert lg["digit_mass"][lg["field"] == "arousal"][0] == pytest.approx(0.875)
    assert lg["digit_mass"][lg["field"] == "valence"][0] == pytest.approx(1.0)


def test_native_answers_are_not_replaced_silently(native_store, lab, store_copy):
    params_file, data = store_copy
    with pytest.raises(DataError, match="holds answers this pipeline asked the model for"):
        run_import(load_params(params_file), DataPaths(data),
                   predictions=lab[1][MODEL]["predictions"], mapping_file=lab[1][MODEL]["map"],
                   logits=lab[1][MODEL]["logits"], model_id=MODEL)


def test_cli_dry_run_and_one_line_refusal(native_store, lab, fresh):
    params_file = str(native_store[0])
    plan = lab[1][MODEL]
    base = ["results", "import", "--params", params_file, "--data", str(fresh), "--predictions",
            str(plan["predictions"]), "--map", str(plan["map"]), "--logits", plan["logits"],
            "--model-id", MODEL]
    r = CliRunner().invoke(app, [*base, "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "matched: 48" in r.output and "unmatched: 0" in r.output
    assert "digit mass below 0.5: 0" in r.output and "dry run: nothing written" in r.output
    assert _nothing_written(fresh)
    r = CliRunner().invoke(app, [*base, "--condition", "baseline"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "--condition" in r.output


def test_model_and_condition_fields_split_one_file(native_store, lab, fresh, tmp_path):
    p = _params(native_store)
    rows = _lines(lab[1][MODEL]["predictions"])
    both = ([{**r, "who": MODEL, "turn": "context_carry_t0_r1"} for r in rows]
            + [{**r, "who": MODEL, "turn": "context_carry_t0.7_r2"} for r in rows])
    _write_lines(tmp_path / "p.jsonl", both)
    (tmp_path / "m.yaml").write_text(
        "predictions:\n  format: jsonl\n  stimulus: {field: img}\n  label: pred_label\n"
        "  valence: val\n  arousal: aro\n  model: who\n  condition: turn\n  out_of_range: keep\n")
    rep = run_import(p, DataPaths(fresh), predictions=tmp_path / "p.jsonl",
                     mapping_file=tmp_path / "m.yaml", dry_run=True)
    assert rep.groups == {f"{MODEL} | context_carry_t0_r1": 48,
                          f"{MODEL} | context_carry_t0.7_r2": 48}
    rep = run_import(p, DataPaths(fresh), predictions=tmp_path / "p.jsonl",
                     mapping_file=tmp_path / "m.yaml", condition="context_carry_t0.7_r2")
    assert list(rep.groups) == [f"{MODEL} | context_carry_t0.7_r2"]
    assert PredictionStore(fresh).read(PredictionStore(fresh).condition_dir(
        "embedded", "context_carry_t0.7_r2", MODEL), p.study.emotions)["repeat"].unique().to_list() == [2]
    both[50]["turn"] = "warm_start"
    _write_lines(tmp_path / "p.jsonl", both)
    with pytest.raises(DataError, match=r"p.jsonl, row 51, field 'turn': condition 'warm_start'"):
        run_import(p, DataPaths(fresh), predictions=tmp_path / "p.jsonl",
                   mapping_file=tmp_path / "m.yaml", dry_run=True)


def test_a_model_that_cannot_run_here_is_stood_in_for_by_its_import(native_store, lab, fresh,
                                                                     monkeypatch):
    """Answers imported for an Ollama model, no server: planning reads them, asks nothing."""
    from emoface.ablations import WorkItem
    from emoface.results.imported import ImportedModel, build_or_stand_in
    from emoface.uptodate import inference_is_current

    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens there
    p = _params(native_store)
    p = p.model_copy(update={"inference": p.inference.model_copy(update={
        "ollama": p.inference.ollama.model_copy(update={"retries": 0, "timeout_s": 2})})})
    model = "ollama/gemma3:4b"
    plan = lab[1][MODEL]
    ss = load_stimulus_set(DataPaths(fresh).stimulus_set("embedded"), p.study)

    def build():
        return make_backend(model, p.inference, emotions=p.study.emotions, stimulus_set=ss)

    real = build_or_stand_in(model, build, fresh)  # nothing imported yet: the real backend
    assert not isinstance(real, ImportedModel)
    with pytest.raises(Exception, match="127.0.0.1:9"):
        real.info  # noqa: B018 - the real error, where it always came
    run_import(p, DataPaths(fresh), predictions=plan["predictions"], mapping_file=plan["map"],
               logits=plan["logits"], model_id=model)
    backend = build_or_stand_in(model, build, fresh)
    assert isinstance(backend, ImportedModel)
    store = PredictionStore(fresh)
    specs = plan_condition(backend, ss, Condition(), Condition().options(p.inference), store,
                           batch_size=p.inference.batch_size)
    assert pending_specs(specs, store) == []
    assert inference_is_current([WorkItem("predictions", "embedded", model, Condition())], p,
                                DataPaths(fresh))
    with pytest.raises(Exception, match="has only imported answers here"):
        backend.converse(None, [], Condition().options(p.inference))


def test_a_changed_plan_or_an_interrupted_import_is_refused(native_store, lab, fresh):
    p = _params(native_store)
    _import(native_store, fresh, lab[1][MODEL])
    ss = load_stimulus_set(DataPaths(fresh).stimulus_set("embedded"), p.study)
    backend = make_backend(MODEL, p.inference, emotions=p.study.emotions, stimulus_set=ss)
    store = PredictionStore(fresh)
    with pytest.raises(DataError, match="made for another plan .*batch_size"):
        plan_condition(backend, ss, Condition(), Condition().options(p.inference), store,
                       batch_size=12)
    folder = store.condition_dir("embedded", "context_carry_t0_r1", MODEL)
    (folder / "b0001.parquet").unlink()
    with pytest.raises(DataError, match="imported batch b0001 is damaged .*import again"):
        plan_condition(backend, ss, Condition(), Condition().options(p.inference), store,
                       batch_size=p.inference.batch_size)
