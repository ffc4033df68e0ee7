"""The import mapping file (YAML): where each value is in a lab's own files.

Validated with pydantic like params.yaml: an unknown key, a missing one or a wrong value is an
error naming the file and the key. Example (the README's worked one)::

    predictions:
      format: jsonl                               # jsonl | csv | parquet
      stimulus: {field: img, match: file_name}    # file_name | stimulus_id | sha256
      label: pred_label
      valence: val                                # optional: absent = not asked (a classifier)
      arousal: aro
      raw: response                               # optional
      model: model                                # optional: else --model-id
      condition: turn                             # optional: else --condition
      out_of_range: refuse                        # refuse | keep (status out_of_range)
    logits:                                       # optional section
      per: stimulus             # stimulus: one NPZ per stimulus, named after the image file's stem
                                # all: one NPZ, arrays [n, steps, k] + a stimulus array [n]
      stimulus: img             # per: all: the array naming each entry's stimulus (as `match`)
      tokens: tokens            # [steps, k] token strings ... or
      token_ids: ids            # [steps, k] integer ids + vocab: a JSON {id: token} / list, or
      vocab: vocab.json         #   a text file with one token per line (line i = id i)
      values: probs             # [steps, k]
      values_are: probabilities # probabilities | logprobs
      step_names: fields        # [steps]: valence | arousal | other ... or
      valence_step: 1           # the step's position in the answer
      arousal_step: 2
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emoface.config import _format_validation_error, _UniqueKeyLoader
from emoface.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


FieldName = Field(min_length=1)


class StimulusRef(_Strict):
    field: str = FieldName
    match: Literal["file_name", "stimulus_id", "sha256"] = "file_name"


class PredictionsMap(_Strict):
    format: Literal["jsonl", "csv", "parquet"]
    stimulus: StimulusRef
    label: str | None = None
    valence: str | None = None
    arousal: str | None = None
    raw: str | None = None
    model: str | None = None
    condition: str | None = None
    # a rating outside 1-9: refuse (default: usually another scale, e.g. 0-100 or -1..1), or keep
    # it as the parser keeps a native answer ("10": status out_of_range, no value)
    out_of_range: Literal["refuse", "keep"] = "refuse"

    @model_validator(mode="after")
    def _something(self) -> PredictionsMap:
        if self.label is None and self.valence is None and self.arousal is None:
            raise ValueError("name at least one of label, valence, arousal")
        return self


class LogitsMap(_Strict):
    per: Literal["stimulus", "all"] = "stimulus"
    stimulus: str | None = None
    tokens: str | None = None
    token_ids: str | None = None
    vocab: str | None = None
    values: str
    values_are: Literal["probabilities", "logprobs"]
    step_names: str | None = None
    valence_step: int | None = Field(None, ge=0)
    arousal_step: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> LogitsMap:
        if (self.tokens is None) == (self.token_ids is None):
            raise ValueError("give exactly one of tokens (strings) or token_ids (+ vocab)")
        if self.token_ids is not None and self.vocab is None:
            raise ValueError("token_ids needs vocab: a file turning ids into token strings")
        if self.tokens is not None and self.vocab is not None:
            raise ValueError("vocab is only used with token_ids")
        by_position = self.valence_step is not None or self.arousal_step is not None
        if (self.step_names is None) == (not by_position):
            raise ValueError("say which step is which: step_names (an array) or "
                             "valence_step / arousal_step (positions), not both")
        if self.per == "all" and self.stimulus is None:
            raise ValueError("per: all needs stimulus: the array naming each entry's stimulus")
        if self.per == "stimulus" and self.stimulus is not None:
            raise ValueError("stimulus is only used with per: all (per stimulus, the NPZ file's "
                             "name is the image file's stem)")
        return self


class ImportMap(_Strict):
    predictions: PredictionsMap
    logits: LogitsMap | None = None


def load_mapping(path: Path) -> ImportMap:
    """Read and validate a mapping file; one line per invalid key, naming the file and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: mapping file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read ({err})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a predictions section")
    try:
        return ImportMap.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(path, err)) from None
