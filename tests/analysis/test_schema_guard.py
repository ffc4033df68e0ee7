"""Bad tables are rejected by schema before any statistic runs."""

from __future__ import annotations

import polars as pl
import pytest

from emoface.ablations import run_analysis
from emoface.analysis.context import AnalysisContext
from emoface.errors import DataError

MODEL = "simulated/gemma3-4b"


@pytest.fixture
def stored(simulated_store):
    p, data = simulated_store
    return p, data, next(iter((data.root / "predictions").rglob("b0000.parquet")))


def _tamper(path, column: str, row: int, value) -> None:
    df = pl.read_parquet(path)
    vals = df[column].to_list()
    vals[row - 1] = value
    df.with_columns(pl.Series(column, vals, dtype=df[column].dtype)).write_parquet(path)
    # a writer's bug, not disk damage: re-commit so the batch's checksums agree with the file
    from emoface.inference import batchfiles

    key = batchfiles.read_record(path.parent, 0)["key"]
    batchfiles.commit(path.parent, 0, key, {"npz": path.with_suffix(".npz"), "parquet": path},
                      rows=df.height)


@pytest.mark.parametrize("column,value,check", [
    ("valence", 12.0, "less_than_or_equal_to"),
    ("emotion", "bored", "usable_emotion_in_study_set"),
    ("arousal_status", "great", "isin"),
])
def test_bad_predictions_never_reach_statistics(stored, column, value, check):
    p, data, shard = stored
    _tamper(shard, column, 5, value)
    with pytest.raises(DataError, match=check) as info:
        run_analysis("baseline", AnalysisContext(p, data, [MODEL]))
    assert info.value.row == 5 and str(shard.parent) in str(info.value)
    if column != "emotion":  # the emotion rule is a table-level check: row named in the message
        assert info.value.field == column
