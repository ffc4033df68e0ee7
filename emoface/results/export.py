"""``emoface results export``: the current answers as tidy tables for other tools.

Writes, under ``--out``:

* ``answers.{csv,parquet}``: one row per (model, condition, stimulus) with the parsed values and
  their statuses, the raw answer per question, the stimulus design (intended emotion, race,
  gender, identity), the human norms, provenance (backend, digest, versions, code, where the row
  came from) and the ``simulated`` flag;
* ``digits.{csv,parquet}``: the 9-digit distribution at each rating step, long: one row per
  (model, condition, stimulus, field, digit) with the log-probability as stored and the
  probability;
* ``codebook.md``: every column, its type, meaning and allowed values.

Only what the store's current plan names is read (``PredictionStore.read`` / ``read_logits``:
the batches ``current.json`` names, verified by size and checksum). A (condition, model) folder
whose batches are not all current is skipped and listed, never read in part.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
import polars as pl

from emoface.backends import BACKENDS
from emoface.config import Params
from emoface.errors import DataError, EmofaceError
from emoface.inference import batchfiles
from emoface.inference.conditions import LabelSource
from emoface.inference.store import PredictionStore
from emoface.io import atomic_path, write_csv, write_parquet
from emoface.parsing import STATUSES
from emoface.paths import DataPaths
from emoface.stimuli.store import load_stimulus_set

EMOTION_STATUSES = (*STATUSES, "not_asked")
RAW_FIELDS = ("emotion", "valence", "arousal", "json")

# column -> (meaning, allowed values); the type is read from the written table
ANSWER_COLUMNS: dict[str, tuple[str, str]] = {
    "stimulus_set": ("stimulus set the images come from (data/stimuli/<name>/)", "a set name"),
    "model_id": ("the model, backend/model",
                 f"backend one of {', '.join(BACKENDS)}; e.g. simulated/gemma3-4b"),
    "condition_id": ("the condition: protocol, temperature, repeat",
                     "`<protocol>[-<label source>]_t<temperature>_r<repeat>`"),
    "protocol": ("how the model was asked", "context_carry, single_shot, text_only"),
    "temperature": ("sampling temperature", "0-2"),
    "repeat": ("repeat number (T = 0 repeats are one piece of work: 1)", ">= 1"),
    "label_source": ("text_only: where the label given to the model came from",
                     f"{', '.join(get_args(LabelSource))}; empty otherwise"),
    "label_given": ("text_only: the label given to the model", "an emotion word; empty otherwise"),
    "stimulus_id": ("the image's id in the stimulus set", "manifest ids"),
    "stimulus_file": ("the image file, relative to the set's folder", "a path"),
    "stimulus_sha256": ("SHA-256 of the image file the model saw", "64 hex digits"),
    "intended_emotion": ("the emotion the image was made/labelled to show", "the study's emotions"),
    "race": ("the face's race group (stimulus design)", "as in the manifest"),
    "gender": ("the face's gender (stimulus design)", "as in the manifest"),
    "identity": ("the face's identity (cluster for bootstrap CIs)", "as in the manifest"),
    "image_source": ("where the image comes from",
                     "synthetic, synthetic_demo, user, fer2013, affectnet"),
    "emotion": ("the parsed emotion answer (an out-of-set word is kept here)",
                "the study's emotions when emotion_status is ok/normalised; empty if none"),
    "emotion_status": ("how the emotion answer parsed", ", ".join(EMOTION_STATUSES)),
    "valence": ("the parsed valence rating", "1-9; empty unless valence_status is ok/normalised"),
    "valence_status": ("how the valence answer parsed", ", ".join(EMOTION_STATUSES)),
    "arousal": ("the parsed arousal rating", "1-9; empty unless arousal_status is ok/normalised"),
    "arousal_status": ("how the arousal answer parsed", ", ".join(EMOTION_STATUSES)),
    "usable_emotion": ("emotion_status is ok or normalised", "true, false"),
    "correct": ("usable emotion equal to intended_emotion", "true, false"),
    **{f"raw_{f}": (f"the model's raw answer to the {f} question"
                    + (" (single-shot JSON answer)" if f == "json" else ""), "text; empty if not asked")
       for f in RAW_FIELDS},
    "human_valence_mean": ("human raters' mean valence of the image (norms)", "1-9; empty: no norms"),
    "human_valence_sd": ("SD (ddof 1) of the human valence ratings", "0-4; empty: no norms"),
    "human_arousal_mean": ("human raters' mean arousal of the image (norms)", "1-9; empty: no norms"),
    "human_arousal_sd": ("SD (ddof 1) of the human arousal ratings", "0-4; empty: no norms"),
    "human_n_raters": ("number of human raters of the image", ">= 1; empty: no norms"),
    "simulated": ("true when the answer comes from a simulated rater, not a real model",
                  "true, false"),
    "source": ("native: asked by this pipeline; imported: brought in by emoface results import",
               "native, imported"),
    "source_file": ("imported rows: the file the answer was read from", "a path; empty if native"),
    "source_sha256": ("imported rows: SHA-256 of that file", "64 hex digits; empty if native"),
    "mapping_sha256": ("imported rows: SHA-256 of the mapping file used",
                       "64 hex digits; empty if native"),
    "backend": ("the backend that served the model", ", ".join(BACKENDS)),
    "model_digest": ("the model weights' digest as the backend reported it", "text"),
    "backend_version": ("the backend's version (server / library)", "text"),
    "quantization": ("the weights' quantization as reported", "text"),
    "served_by": ("the host / worker that served the row", "text; empty in older batches"),
    "prompt_version": ("version of the prompts asked", "text"),
    "parser_version": ("version of the answer parser", "text"),
    "options": ("the generation options sent (JSON)", "JSON object"),
    "n_calls": ("model calls made for this row", ">= 1"),
    "attempts": ("requests sent, retries included", ">= n_calls"),
    "latency_s": ("seconds the calls took", ">= 0"),
    "prompt_tokens": ("prompt tokens processed", ">= 0"),
    "completion_tokens": ("tokens generated", ">= 0"),
    "cached_tokens": ("prompt tokens reused from a cache", ">= 0"),
    "emoface_version": ("emoface version that made the row", "text"),
    "code_commit": ("git commit of the code that made the row", "40 hex digits or unknown"),
    "code_dirty": ("the code had uncommitted changes", "true, false; empty: no git"),
}

DIGIT_COLUMNS: dict[str, tuple[str, str]] = {
    "stimulus_set": ANSWER_COLUMNS["stimulus_set"],
    "model_id": ANSWER_COLUMNS["model_id"],
    "condition_id": ANSWER_COLUMNS["condition_id"],
    "stimulus_id": ANSWER_COLUMNS["stimulus_id"],
    "field": ("which rating the step answered", "valence, arousal"),
    "step": ("index of the rating step among the generated tokens", ">= 0"),
    "digit": ("the rating digit", "1-9"),
    "logprob": ("log-probability of the digit at the rating step, as stored (variants such as "
                "'7' and ' 7' merged)", "<= 0; empty: not in the top-k"),
    "probability": ("exp(logprob): the digit's probability, not renormalised",
                    "0-1; empty: not in the top-k"),
    "digit_mass": ("probability the nine digits held together at that step",
                   "0-1 (a lower bound when digits are missing)"),
    "digit_source": ("exact: full-vocabulary values; topk: read from the top-k list",
                     "exact, topk"),
    "simulated": ANSWER_COLUMNS["simulated"],
}


DIGIT_TYPES: dict[str, pl.DataType] = {
    "stimulus_set": pl.String(), "model_id": pl.String(), "condition_id": pl.String(),
    "stimulus_id": pl.String(), "field": pl.String(), "step": pl.Int64(), "digit": pl.Int64(),
    "logprob": pl.Float64(), "probability": pl.Float64(), "digit_mass": pl.Float64(),
    "digit_source": pl.String(), "simulated": pl.Boolean(),
}


# text columns whose values present in the export the codebook lists
CATEGORICAL = ("stimulus_set", "model_id", "condition_id", "intended_emotion", "race", "gender",
               "image_source", "source", "backend", "field", "digit_source")


@dataclass
class ExportSummary:
    out: Path
    answers: int = 0
    digit_rows: int = 0
    folders: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def prediction_folders(data: DataPaths) -> list[Path]:
    """Every (set, condition, model) folder of the store that records a plan (current.json)."""
    root = data.root / "predictions"
    return sorted(p for p in root.glob("*/*/*") if (p / batchfiles.CURRENT).is_file())


def _raw(raw_answers: str) -> dict[str, str | None]:
    out: dict[str, str | None] = dict.fromkeys(RAW_FIELDS)
    for item in json.loads(raw_answers or "[]"):
        if item.get("field") in out:
            out[item["field"]] = item.get("text")
    return out


def _with_raw(df: pl.DataFrame) -> pl.DataFrame:
    raws = [_raw(r) for r in df["raw_answers"].to_list()]
    return df.with_columns([pl.Series(f"raw_{f}", [r[f] for r in raws], pl.String)
                            for f in RAW_FIELDS])


class Filters:
    """``--only``: ablation ids, condition ids and model ids (comma-separated). Within a kind any
    may match; across kinds all must (``A5,simulated/gemma3-4b``: A5's work of that model)."""

    def __init__(self, only: str | None, params: Params, folders: Sequence[tuple[str, str]]):
        from emoface.ablations import known_ids, with_baseline, work_for

        self.pairs: set[tuple[str, str]] | None = None
        self.conditions: set[str] | None = None
        self.models: set[str] | None = None
        tokens = [t.strip() for t in (only or "").split(",") if t.strip()]
        if not tokens:
            return
        models = sorted({m for m, _ in folders})
        conditions = sorted({c for _, c in folders})
        ablations = with_baseline(known_ids())
        for t in tokens:
            if t in ablations:
                items = work_for(t, params, models)
                self.pairs = (self.pairs or set()) | {
                    (i.model_id, i.condition.condition_id) for i in items if i.condition}
            elif t in conditions:
                self.conditions = (self.conditions or set()) | {t}
            elif t in models:
                self.models = (self.models or set()) | {t}
            else:
                raise DataError(f"--only: {t!r} is no ablation, stored condition or stored model "
                                f"(ablations: {', '.join(ablations)}; conditions: "
                                f"{', '.join(conditions) or 'none'}; models: "
                                f"{', '.join(models) or 'none'})", field="--only")

    def keep(self, model_id: str, condition_id: str) -> bool:
        return ((self.pairs is None or (model_id, condition_id) in self.pairs)
                and (self.conditions is None or condition_id in self.conditions)
                and (self.models is None or model_id in self.models))


def _folder_model(folder: Path) -> str | None:
    """The model id of a folder, from the first current batch's rows (the folder name is a slug)."""
    keys = batchfiles.current_keys(folder)
    first = batchfiles.data_file(folder, 0, "parquet")
    if not keys or not first.exists():
        return None
    try:
        return pl.read_parquet(first, columns=["model_id"])["model_id"][0]
    except (pl.exceptions.PolarsError, OSError, IndexError):
        return None


def _design(data: DataPaths, set_name: str, params: Params, cache: dict) -> pl.DataFrame:
    if set_name not in cache:
        s = load_stimulus_set(data.stimulus_set(set_name), params.study)
        d = s.manifest.select("stimulus_id", pl.col("file").alias("stimulus_file"),
                              pl.col("emotion").alias("intended_emotion"), "race", "gender",
                              "identity", pl.col("source").alias("image_source"))
        if s.norms is not None:
            n = s.norms.select("stimulus_id",
                               *[pl.col(c).alias(f"human_{c}") for c in
                                 ("valence_mean", "valence_sd", "arousal_mean", "arousal_sd",
                                  "n_raters")])
        else:
            n = pl.DataFrame({"stimulus_id": d["stimulus_id"]}).with_columns(
                *[pl.lit(None, pl.Float64).alias(f"human_{c}") for c in
                  ("valence_mean", "valence_sd", "arousal_mean", "arousal_sd")],
                pl.lit(None, pl.Int64).alias("human_n_raters"))
        cache[set_name] = d.join(n, on="stimulus_id", how="left")
    return cache[set_name]


def _digits(logits: dict[str, np.ndarray], set_name: str, model_id: str, condition_id: str,
            simulated: bool) -> pl.DataFrame:
    rating = np.isin(logits["field"], ("valence", "arousal")) & (logits["step"] >= 0)
    lp = logits["digit_logprobs"][rating]
    n = int(rating.sum())
    with np.errstate(invalid="ignore"):
        p = np.exp(lp)
    rep = lambda a: np.repeat(np.asarray(a)[rating], 9)  # noqa: E731
    return pl.DataFrame(schema=DIGIT_TYPES, data={
        "stimulus_set": [set_name] * (9 * n), "model_id": [model_id] * (9 * n),
        "condition_id": [condition_id] * (9 * n),
        "stimulus_id": rep(logits["stimulus_id"]).astype(str),
        "field": rep(logits["field"]).astype(str), "step": rep(logits["step"]).astype(np.int64),
        "digit": np.tile(np.arange(1, 10, dtype=np.int64), n),
        "logprob": lp.reshape(-1), "probability": p.reshape(-1),
        "digit_mass": rep(logits["digit_mass"]).astype(np.float64),
        "digit_source": rep(logits["source"]).astype(str),
        "simulated": [simulated] * (9 * n),
    }).with_columns(pl.col("logprob").fill_nan(None), pl.col("probability").fill_nan(None))


def collect(params: Params, data: DataPaths, *, only: str | None = None
            ) -> tuple[pl.DataFrame, pl.DataFrame, list[str], list[str]]:
    """(answers, digits, folders read, folders skipped with why) of the current store."""
    store = PredictionStore(data.root)
    found = []
    for folder in prediction_folders(data):
        model = _folder_model(folder)
        found.append((folder, model))
    filt = Filters(only, params, [(m, f.parent.name) for f, m in found if m is not None])
    answers, digits, read, skipped, designs = [], [], [], [], {}
    for folder, model in found:
        set_name, condition_id = folder.parent.parent.name, folder.parent.name
        if model is not None and not filt.keep(model, condition_id):
            continue
        try:
            rows = store.read(folder, params.study.emotions)
            logits = store.read_logits(folder)
        except EmofaceError as err:
            skipped.append(f"{folder}: {err}")
            continue
        model = rows["model_id"][0]
        if not filt.keep(model, condition_id):
            continue
        rows = _with_raw(rows)
        for c, dtype in (("source", pl.String), ("source_file", pl.String),
                         ("source_sha256", pl.String), ("mapping_sha256", pl.String),
                         ("served_by", pl.String)):
            if c not in rows.columns:
                rows = rows.with_columns(pl.lit(None, dtype).alias(c))
        rows = rows.with_columns(pl.col("source").fill_null("native"),
                                 pl.lit(set_name).alias("stimulus_set"))
        rows = rows.join(_design(data, set_name, params, designs), on="stimulus_id", how="left")
        usable = pl.col("emotion_status").is_in(["ok", "normalised"])
        rows = rows.with_columns(usable.alias("usable_emotion"),
                                 (usable & (pl.col("emotion") == pl.col("intended_emotion")))
                                 .fill_null(False).alias("correct"))
        answers.append(rows.select(list(ANSWER_COLUMNS)))
        digits.append(_digits(logits, set_name, model, condition_id, bool(rows["simulated"].any())))
        read.append(str(folder))
    if not answers:
        raise DataError("no complete answers to export" + (f" for --only {only}" if only else "")
                        + (f" ({len(skipped)} folder(s) incomplete, first: {skipped[0]})"
                           if skipped else "; run the pipeline or emoface results import first"),
                        file=data.root / "predictions")
    keys = ["stimulus_set", "model_id", "condition_id", "stimulus_id"]
    a = pl.concat(answers, how="vertical_relaxed").sort(keys)
    d = pl.concat(digits, how="vertical_relaxed").sort([*keys, "field", "digit"])
    return a, d, read, skipped


def _type(dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "text"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "float (64-bit)"
    return str(dtype)


def codebook(answers: pl.DataFrame, digits: pl.DataFrame, *, simulated: bool) -> str:
    lines = ["# Codebook of the exported answers", "",
             "Written by `emoface results export`. Empty cells (CSV) / nulls (Parquet) mean "
             "*no value*; a value that failed to parse is never coerced (its status says why).",
             ""]
    if simulated:
        lines += ["> **Simulated data.** Rows with `simulated = true` come from simulated raters: "
                  "they describe the simulator, not a real model.", ""]
    for title, df, spec, key in (
            ("answers.csv / answers.parquet", answers, ANSWER_COLUMNS,
             "one row per (stimulus_set, model_id, condition_id, stimulus_id)"),
            ("digits.csv / digits.parquet", digits, DIGIT_COLUMNS,
             "one row per (stimulus_set, model_id, condition_id, stimulus_id, field, digit)")):
        lines += [f"## {title}", "", f"{df.height:,} rows; {key}.", "",
                  "| column | type | meaning | allowed values |", "|---|---|---|---|"]
        for col in df.columns:
            meaning, allowed = spec[col]
            if col in CATEGORICAL:
                values = df[col].drop_nulls().unique().sort().to_list()
                if 0 < len(values) <= 12:
                    allowed += "; here: " + ", ".join(str(v) for v in values)
            lines.append(f"| `{col}` | {_type(df.schema[col])} | {meaning} | {allowed} |")
        lines.append("")
    lines += ["Statuses: `ok` exact form; `normalised` recovered by a documented rule; "
              "`out_of_set` an emotion word outside the study's set (kept in `emotion`); "
              "`out_of_range` a number outside 1-9; `refused`; `unparseable`; `not_asked` "
              "(e.g. the FER classifier gives no ratings).", ""]
    return "\n".join(lines)


def export(params: Params, data: DataPaths, out: Path, *, only: str | None = None) -> ExportSummary:
    """Write answers, digits (CSV + Parquet) and codebook.md under ``out``."""
    from schemas import validate
    from schemas.results import answers_export_schema, digits_export_schema

    answers, digits, read, skipped = collect(params, data, only=only)
    validate(answers, answers_export_schema(params.study.emotions), file=out / "answers.parquet")
    validate(digits, digits_export_schema(), file=out / "digits.parquet", allow_empty=True)
    s = ExportSummary(out, answers.height, digits.height, read, skipped)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("answers", answers), ("digits", digits)):
        write_csv(df, out / f"{name}.csv")
        write_parquet(df, out / f"{name}.parquet")
        s.files += [out / f"{name}.csv", out / f"{name}.parquet"]
    with atomic_path(out / "codebook.md") as tmp:
        tmp.write_text(codebook(answers, digits, simulated=bool(answers["simulated"].any())))
    s.files.append(out / "codebook.md")
    return s
