"""emoface results export: tidy answers, long digit table, codebook, filters."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from emoface.cli import app
from emoface.config import load_params
from emoface.errors import DataError
from emoface.inference.store import PredictionStore
from emoface.io import read_csv
from emoface.paths import DataPaths
from emoface.results.export import ANSWER_COLUMNS, DIGIT_COLUMNS, export
from tests.results.conftest import MODEL


def test_export_writes_tidy_tables_and_codebook(native_store, tmp_path):
    params_file, data = native_store
    p = load_params(params_file)
    s = export(p, DataPaths(data), tmp_path / "out")
    assert s.answers == 2 * 48 and not s.skipped
    a = pl.read_parquet(tmp_path / "out/answers.parquet")
    assert a.columns == list(ANSWER_COLUMNS)
    assert a.group_by("condition_id").len().sort("condition_id")["len"].to_list() == [48, 48]
    assert a["simulated"].all() and (a["source"] == "native").all()
    # CSV and Parquet hold the same table (floats written at full precision)
    csv = pl.read_csv(tmp_path / "out/answers.csv", schema=a.schema)
    assert csv.equals(a)

    # one row checked by hand against the store and the stimulus set's files
    store = PredictionStore(data)
    folder = store.condition_dir("embedded", "context_carry_t0_r1", MODEL)
    rows = store.read(folder, p.study.emotions)
    sid = rows["stimulus_id"][5]
    native = rows.filter(pl.col("stimulus_id") == sid).row(0, named=True)
    got = a.filter((pl.col("stimulus_id") == sid)
                   & (pl.col("condition_id") == "context_carry_t0_r1")).row(0, named=True)
    for c in ("emotion", "emotion_status", "valence", "valence_status", "arousal",
              "arousal_status", "model_digest", "code_commit"):
        assert got[c] == native[c]
    raw = {r["field"]: r["text"] for r in json.loads(native["raw_answers"])}
    assert (got["raw_emotion"], got["raw_valence"], got["raw_arousal"]) == (
        raw["emotion"], raw["valence"], raw["arousal"])
    norms = read_csv(data / "stimuli/embedded/norms.csv").filter(pl.col("stimulus_id") == sid)
    manifest = read_csv(data / "stimuli/embedded/manifest.csv").filter(pl.col("stimulus_id") == sid)
    assert got["human_valence_mean"] == float(norms["valence_mean"][0])
    assert got["human_n_raters"] == int(norms["n_raters"][0])
    assert (got["intended_emotion"], got["race"], got["gender"], got["identity"]) == tuple(
        manifest.select("emotion", "race", "gender", "identity").row(0))
    assert got["correct"] == (got["emotion"] == got["intended_emotion"])

    # digits: 9 per rating step, probability = exp(log-probability), the mass is their sum
    d = pl.read_parquet(tmp_path / "out/digits.parquet")
    assert d.columns == list(DIGIT_COLUMNS)
    # the baseline's rating steps (single-shot answers JSON: no digit step is stored for it)
    assert d.height == 48 * 2 * 9  # 48 stimuli x valence/arousal x 9 digits
    lg = store.read_logits(folder)
    i = int(np.flatnonzero((lg["stimulus_id"] == sid) & (lg["field"] == "valence"))[0])
    step = d.filter((pl.col("stimulus_id") == sid) & (pl.col("field") == "valence")
                    & (pl.col("condition_id") == "context_carry_t0_r1")).sort("digit")
    assert step["logprob"].to_list() == lg["digit_logprobs"][i].tolist()
    assert step["probability"].to_list() == pytest.approx(
        [math.exp(x) for x in lg["digit_logprobs"][i]], rel=1e-15)
    assert math.isclose(step["probability"].sum(), step["digit_mass"][0], rel_tol=1e-12)

    book = (tmp_path / "out/codebook.md").read_text()
    for col in [*ANSWER_COLUMNS, *DIGIT_COLUMNS]:
        assert f"| `{col}` |" in book
    assert "Simulated data" in book and "| `valence` | float (64-bit) |" in book
    assert ("| `race` | text | the face's race group (stimulus design) | as in the manifest; "
            "here: black, korean |") in book


def test_only_filters_by_ablation_condition_and_model(native_store, tmp_path):
    params_file, data = native_store
    p = load_params(params_file)
    s = export(p, DataPaths(data), tmp_path / "a", only="single_shot_t0_r1")
    a = pl.read_parquet(tmp_path / "a/answers.parquet")
    assert s.answers == 48 and a["condition_id"].unique().to_list() == ["single_shot_t0_r1"]
    # A5 reads the baseline only
    export(p, DataPaths(data), tmp_path / "b", only=f"A5,{MODEL}")
    assert pl.read_parquet(tmp_path / "b/answers.parquet")["condition_id"].unique().to_list() == [
        "context_carry_t0_r1"]
    with pytest.raises(DataError, match="'A99' is no ablation, stored condition or stored model"):
        export(p, DataPaths(data), tmp_path / "c", only="A99")
    with pytest.raises(DataError, match="no complete answers to export"):
        export(p, DataPaths(data), tmp_path / "c", only="A5,single_shot_t0_r1")


def test_incomplete_folder_is_skipped_not_read_in_part(store_copy, tmp_path):
    params_file, data = store_copy
    p = load_params(params_file)
    folder = PredictionStore(data).condition_dir("embedded", "single_shot_t0_r1", MODEL)
    (folder / "b0001.npz").write_bytes(b"damaged")
    s = export(p, DataPaths(data), tmp_path / "out")
    assert s.answers == 48 and len(s.skipped) == 1 and "b0001" in s.skipped[0]


def test_cli_exit_status_and_one_line_error(native_store, tmp_path):
    params_file, data = native_store
    r = CliRunner().invoke(app, ["results", "export", "--params", str(params_file), "--data",
                                 str(data), "--out", str(tmp_path / "o"), "--only", "nope"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["results", "export", "--params", str(params_file), "--data",
                                 str(data), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and "wrote 96 answers" in r.output
