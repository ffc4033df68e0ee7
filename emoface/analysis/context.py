"""Loading what analyses need: validated predictions joined with the stimulus design and norms.

Analyses never call a backend: they read stored predictions, logits and hidden states only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from emoface.config import Params
from emoface.errors import DataError
from emoface.inference.conditions import Condition
from emoface.inference.store import HiddenStateStore, PredictionStore
from emoface.paths import DataPaths
from emoface.stimuli.store import StimulusSet, load_stimulus_set
from schemas import validate
from schemas.analysis import joined_predictions_schema

#: what predictions() and logits() read unless told: Condition's defaults (context-carry, T = 0)
DEFAULT_CONDITION = Condition()


@dataclass
class AnalysisContext:
    params: Params
    data: DataPaths
    models: list[str]
    _sets: dict[str, StimulusSet] = field(default_factory=dict)
    # Several analyses read the same (model, condition) tables: read and validate each once.
    # Polars frames are immutable, so handing out the same frame is safe.
    _predictions: dict[tuple[str, str, str], pl.DataFrame] = field(default_factory=dict)

    @property
    def emotions(self) -> tuple[str, ...]:
        return self.params.study.emotions

    @property
    def a(self):
        return self.params.analysis

    def stimuli(self, name: str | None = None) -> StimulusSet:
        name = name or self.params.stimuli.set_name
        if name not in self._sets:
            self._sets[name] = load_stimulus_set(self.data.stimulus_set(name), self.params.study)
        return self._sets[name]

    def design(self, name: str | None = None) -> pl.DataFrame:
        """Manifest (intended emotion, race, gender, identity) + norms (per-image mean, SD, rater
        count) where the set has them (the columns of ``schemas.analysis.joined_predictions_schema``
        beyond the predictions)."""
        s = self.stimuli(name)
        d = s.manifest.select("stimulus_id", pl.col("emotion").alias("intended"), "race",
                              "gender", "identity",
                              # the image's origin; a prediction row's own ``source`` says
                              # whether the answer was made here or imported
                              pl.col("source").alias("stimulus_source"))
        if s.norms is not None:
            d = d.join(s.norms.select("stimulus_id", "valence_mean", "arousal_mean",
                                      "valence_sd", "arousal_sd", "n_raters"),
                       on="stimulus_id", how="left")
        else:
            d = d.with_columns(pl.lit(None, pl.Float64).alias("valence_mean"),
                               pl.lit(None, pl.Float64).alias("arousal_mean"),
                               pl.lit(None, pl.Float64).alias("valence_sd"),
                               pl.lit(None, pl.Float64).alias("arousal_sd"),
                               pl.lit(None, pl.Int64).alias("n_raters"))
        return d

    def predictions(self, model_id: str, condition: Condition = DEFAULT_CONDITION,
                    set_name: str | None = None) -> pl.DataFrame:
        """Validated predictions of one (model, condition), every stimulus present, joined."""
        set_name = set_name or self.params.stimuli.set_name
        key = (model_id, condition.condition_id, set_name)
        if key not in self._predictions:
            self._predictions[key] = self._read_predictions(model_id, condition, set_name)
        return self._predictions[key]

    def _read_predictions(self, model_id: str, condition: Condition,
                          set_name: str) -> pl.DataFrame:
        store = PredictionStore(self.data.root)
        folder = store.condition_dir(set_name, condition.condition_id, model_id)
        df = store.read(folder, self.emotions)
        design = self.design(set_name)
        missing = set(design["stimulus_id"]) - set(df["stimulus_id"])
        if missing:
            raise DataError(f"{len(missing)} stimuli have no prediction (e.g. {sorted(missing)[0]});"
                            " run the inference again to complete them", file=folder)
        joined = df.join(design, on="stimulus_id", how="inner").sort("stimulus_id")
        # the frame every statistic starts from: one row per stimulus, design and norms present
        return validate(joined, joined_predictions_schema(self.emotions), file=folder)

    def logits(self, model_id: str, condition: Condition = DEFAULT_CONDITION) -> dict[str, np.ndarray]:
        """Logits of the current batches; a missing or damaged NPZ is an error naming it."""
        store = PredictionStore(self.data.root)
        folder = store.condition_dir(self.params.stimuli.set_name, condition.condition_id, model_id)
        return store.read_logits(folder)

    def hidden_layers(self, model_id: str) -> list[dict[str, np.ndarray]]:
        """Per-layer hidden states, only when assembled from the current, verified batches."""
        store = HiddenStateStore(self.data.root)
        return store.read_layers(store.model_dir(self.params.stimuli.set_name, model_id),
                                 order=self.design()["stimulus_id"].to_list())
