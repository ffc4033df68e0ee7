"""The logits and hidden-state files are validated on write and on read: a corrupted logits file
and a misaligned hidden-state file are rejected naming the file, before any statistic sees them."""

from __future__ import annotations

import numpy as np
import pytest

from emoface.errors import DataError
from emoface.inference.engine import plan_condition
from emoface.inference.scheduler import run_specs
from emoface.inference.store import HiddenStateStore, PredictionStore
from schemas.arrays import validate_hidden, validate_logits

EMOTIONS = ("angry", "disgusted", "fearful", "happy", "sad", "surprised")


def logits(n: int = 2) -> dict[str, np.ndarray]:
    lp = np.log(np.full((n, 9), 0.1))  # 0.9 of the mass on digits
    lp[0] = np.nan  # the emotion step: no digits
    return {"stimulus_id": np.array(["s1"] * n), "field": np.array(["emotion", "valence"][:n]),
            "step": np.array([0, 1][:n]), "digit_logprobs": lp,
            "digit_mass": np.array([0.0, 0.9][:n]), "source": np.array(["label", "exact"][:n])}


def test_good_logits_pass_and_nan_means_no_digits():
    frame = validate_logits(logits(), file="x.npz", stimulus_ids=["s1"])
    assert frame.height == 2 and frame["digit_lp_1"].null_count() == 1


@pytest.mark.parametrize("corrupt, message", [
    (lambda a: a.update(digit_logprobs=-a["digit_logprobs"]), "digit_lp_1"),  # log-probs > 0
    (lambda a: a.update(digit_logprobs=a["digit_logprobs"][:, :8]), r"expected \(2, 9\)"),
    (lambda a: a.update(digit_logprobs=np.log(np.full((2, 9), 0.2))), "sum to more than 1"),
    (lambda a: a.update(digit_mass=np.array([0.0, 1.5])), "digit_mass"),
    (lambda a: a.update(field=np.array(["emotion", "emotion"])), "stimulus_id"),  # duplicate
    (lambda a: a.update(step=np.array([0])), "step has 1 entries"),
    (lambda a: a.pop("digit_mass"), "lacks digit_mass"),
])
def test_corrupted_logits_are_rejected(corrupt, message):
    arrays = logits()
    corrupt(arrays)
    with pytest.raises(DataError, match=message) as err:
        validate_logits(arrays, file="b0000.npz", stimulus_ids=["s1"])
    assert "b0000.npz" in str(err.value)


def test_logits_of_a_stimulus_without_a_row_are_rejected():
    with pytest.raises(DataError, match="not aligned with prediction rows: 1 extra, 1 missing"):
        validate_logits(logits(), file="b.npz", stimulus_ids=["s2"])


def hidden(ids=("a", "b", "c"), layers=2, d=4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"stimulus_id": np.array(ids), "image_pool": rng.normal(size=(len(ids), layers, d)),
            "last_token": rng.normal(size=(len(ids), layers, d))}


def test_hidden_states_shape_finite_and_order():
    assert validate_hidden(hidden(), file="h.npz", order=["a", "b", "c"]).height == 3
    bad = hidden()
    bad["image_pool"][1, 0, 2] = np.inf
    with pytest.raises(DataError, match="field 'finite'"):
        validate_hidden(bad, file="h.npz")
    short = hidden()
    short["last_token"] = short["last_token"][:2]
    with pytest.raises(DataError, match="expected 3 rows, one per stimulus_id"):
        validate_hidden(short, file="h.npz")
    with pytest.raises(DataError, match=r"not in the manifest's order: row 1 is b, expected a"):
        validate_hidden(hidden(ids=("b", "a", "c")), file="h.npz", order=["a", "b", "c"])


def test_store_rejects_a_corrupted_logits_file_on_read(tmp_path, small_params, small_set):
    """A logits NPZ replaced after commit with one that has positive log-probabilities (and the
    commit record re-signed, so only the schema can catch it) is refused by read_logits."""
    from emoface.backends import make_backend
    from emoface.inference import batchfiles
    from emoface.inference.conditions import Condition
    from emoface.io import sha256_file
    from emoface.stimuli.store import load_stimulus_set

    ss = load_stimulus_set(small_set, small_params.study)
    backend = make_backend("simulated/gemma3-4b", small_params.inference,
                           emotions=small_params.study.emotions, stimulus_set=ss)
    store = PredictionStore(tmp_path)
    cond = Condition()
    specs = plan_condition(backend, ss, cond, cond.options(small_params.inference), store,
                           batch_size=small_params.inference.batch_size)
    run_specs(backend, specs, store, small_params.study.emotions)
    folder = specs[0].folder
    assert store.read_logits(folder)["digit_logprobs"].shape[1] == 9
    npz = store.batch_file(folder, 0, "npz")
    arrays = dict(np.load(npz))
    arrays["digit_logprobs"] = np.abs(arrays["digit_logprobs"])
    np.savez_compressed(npz, **arrays)
    record = batchfiles.read_record(folder, 0)
    record["files"]["npz"].update(size=npz.stat().st_size, sha256=sha256_file(npz))
    batchfiles._write_json(batchfiles.record_file(folder, 0), record)
    with pytest.raises(DataError, match="digit_lp_") as err:
        store.read_logits(folder)
    assert "b0000.npz" in str(err.value)


def test_store_rejects_a_misaligned_hidden_state_layer(tmp_path):
    """A layer file whose rows are in another order than the manifest is refused on read."""
    import json

    from emoface.inference import batchfiles
    from emoface.io import sha256_file

    store = HiddenStateStore(tmp_path)
    folder = store.model_dir("embedded", "simulated/gemma3-4b")
    ids = ["a", "b", "c"]
    h = hidden()
    states = [{"image_pool": h["image_pool"][i], "last_token": h["last_token"][i]}
              for i in range(3)]
    store.set_current(folder, ["k0"])
    store.write_batch(folder, 0, "k0", ids, states)
    written = store.assemble(folder, ids)
    assert len(store.read_layers(folder, order=ids)) == len(written) == 2
    layer = dict(np.load(written[1]))
    layer["stimulus_id"] = np.array(["b", "a", "c"])  # rows relabelled: misaligned
    np.savez_compressed(written[1], **layer)
    record = json.loads((folder / "layers.json").read_text())
    record["files"][written[1].name] = {"size": written[1].stat().st_size,
                                        "sha256": sha256_file(written[1])}
    (folder / "layers.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="not in the manifest's order") as err:
        store.read_layers(folder, order=ids)
    assert "layer_01.npz" in str(err.value)
    with pytest.raises(DataError, match="not in the manifest's order"):
        store.read_layers(folder)  # without an order: every layer must match the first
    assert batchfiles.current_keys(folder) == ["k0"]


def test_joined_baseline_frame_is_validated(tmp_path, small_params, small_set):
    """The frame every statistic starts from: predictions + design, one row per stimulus."""
    import polars as pl

    from emoface.analysis.context import AnalysisContext
    from emoface.backends import make_backend
    from emoface.inference.conditions import Condition
    from emoface.paths import DataPaths
    from emoface.stimuli.store import load_stimulus_set
    from schemas import validate
    from schemas.analysis import joined_predictions_schema

    data = DataPaths(tmp_path)
    paths = data.stimulus_set(small_params.stimuli.set_name)
    import shutil
    shutil.copytree(small_set.root, paths.root)
    ss = load_stimulus_set(paths, small_params.study)
    backend = make_backend("simulated/gemma3-4b", small_params.inference,
                           emotions=small_params.study.emotions, stimulus_set=ss)
    store = PredictionStore(tmp_path)
    cond = Condition()
    specs = plan_condition(backend, ss, cond, cond.options(small_params.inference), store,
                           batch_size=small_params.inference.batch_size)
    run_specs(backend, specs, store, small_params.study.emotions)
    ctx = AnalysisContext(small_params, data, ["simulated/gemma3-4b"])
    frame = ctx.predictions("simulated/gemma3-4b")
    assert frame.height == ss.manifest.height and "intended" in frame.columns
    schema = joined_predictions_schema(small_params.study.emotions)
    with pytest.raises(DataError, match="field 'intended'"):
        validate(frame.with_columns(pl.lit("neutral").alias("intended")), schema, file="f")
    with pytest.raises(DataError, match="one_row_per_stimulus"):
        validate(pl.concat([frame, frame.head(1)]), schema, file="f")


def test_headline_schema_on_write_and_read(tmp_path):
    import json

    from schemas.analysis import read_headline, validate_headline

    good = {"outcome": "supports", "estimate": 0.2, "ci_low": 0.1, "ci_high": 0.3, "p_adj": 0.01}
    path = tmp_path / "headline.json"
    path.write_text(json.dumps(good))
    assert read_headline(path) == good
    for bad, message in [({**good, "p_adj": 1.5}, "p_adj"), ({**good, "outcome": "yes"}, "outcome"),
                         ({**good, "ci_low": 0.25}, "ci_low > estimate"),
                         ({k: v for k, v in good.items() if k != "p_adj"}, "headline keys")]:
        with pytest.raises(DataError, match=message):
            validate_headline(bad, file=path)
