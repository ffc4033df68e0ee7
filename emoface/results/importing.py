"""``emoface results import``: answers produced elsewhere, into the store as if asked here.

Every value goes through the project's own pieces: labels and ratings through
:mod:`emoface.parsing` (an emotion outside the study's set is kept as ``out_of_set``, as for a
native answer), the top-k tokens at each rating step through :func:`emoface.logits.merge_digit_logprobs`
("7" and " 7" count once; the top-k list is kept as given), the rows through the predictions schema
and the store's own writer (:meth:`PredictionStore.write_batch`: logits, rows, commit record with
checksums; ``current.json``). The batches are the pipeline's own slices of the stimulus set with
the plan keys the pipeline computes, so the dry run counts them as done and the analyses read them;
:mod:`emoface.results.imported` makes the planner use them instead of calling the model.

Everything is read and checked before anything is written: a bad source is refused with one line
naming the file, line (row) and field, and the store is left as it was.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
import polars as pl

from emoface.config import Params
from emoface.errors import ConfigError, DataError
from emoface.inference import batchfiles
from emoface.inference.conditions import Condition, LabelSource
from emoface.inference.engine import stimulus_inputs
from emoface.inference.runner import RATING_FIELDS, LogitRecord
from emoface.inference.service import resolve_labels
from emoface.inference.store import PredictionStore, batches, plan_key
from emoface.io import atomic_path, sha256_file
from emoface.logits import DigitDistribution, logprobs_of, merge_digit_logprobs
from emoface.parsing import PARSER_VERSION, Parsed, parse_emotion, parse_rating
from emoface.paths import DataPaths
from emoface.prompts import calls_per_stimulus
from emoface.provenance import code_version
from emoface.results.imported import RECORD
from emoface.results.mapping import ImportMap, load_mapping
from emoface.stimuli.store import StimulusSet, load_stimulus_set
from schemas import predictions_schema, validate

UNKNOWN = "unknown (imported)"
MAX_LISTED = 10
PROB_TOLERANCE = 1e-6  # probabilities may sum to at most 1 + this (float rounding in the source)
_CONDITION = re.compile(r"^(context_carry|single_shot|text_only)"
                        rf"(?:-({'|'.join(get_args(LabelSource))}))?"
                        r"_t([0-9]+(?:\.[0-9]+)?)_r([0-9]+)$")
USABLE = ("ok", "normalised", "not_asked")


def parse_condition(condition_id: str, *, where: str = "--condition") -> Condition:
    """A condition id (``context_carry_t0_r1``, ``text_only-baseline_t0_r1``) as a Condition."""
    m = _CONDITION.match(condition_id or "")
    if m is None:
        raise DataError(f"condition {condition_id!r} is not a condition id: expected "
                        "<protocol>[-<label source>]_t<temperature>_r<repeat> "
                        "(e.g. context_carry_t0_r1)", field=where)
    protocol, source, t, r = m.groups()
    try:
        cond = Condition(protocol=protocol, label_source=source, temperature=float(t),
                         repeat=int(r))
    except ValueError as err:
        msg = "; ".join(e["msg"] for e in err.errors()) if hasattr(err, "errors") else str(err)
        raise DataError(f"condition {condition_id!r} is not a condition id: {msg}",
                        field=where) from None
    if cond.condition_id != condition_id:
        raise DataError(f"condition {condition_id!r} is written {cond.condition_id!r} here "
                        "(a T = 0 condition has one repeat)", field=where)
    return cond


@dataclass
class SourceRow:
    line: int  # 1-based line (JSONL) or data row (CSV, Parquet)
    values: dict


def _read_rows(path: Path, fmt: str) -> Iterator[SourceRow]:
    if not path.is_file():
        raise DataError("predictions file not found", file=path)
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as fh:
            for n, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as err:
                    raise DataError(f"not a JSON object: {err.msg}", file=path, row=n) from None
                if not isinstance(obj, dict):
                    raise DataError("not a JSON object", file=path, row=n)
                yield SourceRow(n, obj)
        return
    try:
        df = (pl.read_csv(path, infer_schema=False) if fmt == "csv" else pl.read_parquet(path))
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot be read as {fmt}: {str(err).splitlines()[0]}", file=path) from None
    for n, row in enumerate(df.iter_rows(named=True), start=1):
        yield SourceRow(n, row)


def _text(value) -> str:
    """A source value as the text the parser reads (7.0 -> "7": a number is not prose)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Matcher:
    def __init__(self, ss: StimulusSet, how: str):
        self.how = how
        m = ss.manifest
        if how == "stimulus_id":
            self.index = {s: s for s in m["stimulus_id"]}
        elif how == "sha256":
            self.index = dict(zip(m["sha256"], m["stimulus_id"], strict=True))
        else:
            self.index = {}
            for sid, f in m.select("stimulus_id", "file").iter_rows():
                for k in {f, Path(f).name}:
                    self.index[k] = None if k in self.index and self.index[k] != sid else sid
        self.stems = {Path(f).stem: sid for sid, f in m.select("stimulus_id", "file").iter_rows()}

    def __call__(self, value) -> str | None:
        v = _text(value).strip()
        if self.how == "file_name":
            v = v.replace("\\", "/")
            return self.index.get(v) or self.index.get(Path(v).name)
        return self.index.get(v.lower() if self.how == "sha256" else v)


@dataclass
class ImportReport:
    """What an import did (or would do, ``--dry-run``)."""

    rows: int = 0
    matched: int = 0
    unmatched: list[str] = field(default_factory=list)
    unusable: int = 0
    out_of_set: int = 0
    steps: int = 0
    steps_low_mass: int = 0
    steps_without_logits: int = 0
    npz_unmatched: list[str] = field(default_factory=list)
    groups: dict[str, int] = field(default_factory=dict)  # "model | condition" -> rows
    folders: list[str] = field(default_factory=list)
    written: bool = False

    def lines(self, threshold: float) -> list[str]:
        out = [f"rows read: {self.rows}", f"matched: {self.matched}",
               f"unmatched: {len(self.unmatched)}"
               + (f" (e.g. {', '.join(self.unmatched[:MAX_LISTED])})" if self.unmatched else ""),
               f"unusable (a field not ok/normalised): {self.unusable} "
               f"(emotion out of set: {self.out_of_set})",
               f"rating steps: {self.steps}, digit mass below {threshold:g}: "
               f"{self.steps_low_mass}, without logits: {self.steps_without_logits}"]
        if self.npz_unmatched:
            out.append(f"NPZ entries matching no image: {len(self.npz_unmatched)} (e.g. "
                       f"{', '.join(self.npz_unmatched[:MAX_LISTED])})")
        out += [f"{k}: {v} rows" for k, v in self.groups.items()]
        return out


# --- logits -------------------------------------------------------------------------------------

class _Logits:
    """Top-k tokens and log-probabilities per (stimulus, rating field), read from the NPZ files."""

    def __init__(self, spec, pattern: str, mapping_dir: Path, matcher: _Matcher,
                 ss: StimulusSet):
        self.spec = spec
        self.files = self._files(pattern)
        self.vocab, self.vocab_file = self._vocab(mapping_dir)
        self.by_stimulus: dict[str, Path] = {}
        self.all_index: dict[str, int] = {}
        if spec.per == "stimulus":
            stems = {Path(f).stem: sid for sid, f in ss.manifest.select("stimulus_id", "file")
                     .iter_rows()}
            for f in self.files:
                sid = stems.get(f.stem)
                if sid is not None:
                    self.by_stimulus[sid] = f
            self.unmatched_files = [f.name for f in self.files if f.stem not in stems]
        else:
            if len(self.files) != 1:
                raise DataError(f"per: all needs exactly one NPZ file, found {len(self.files)}",
                                file=pattern)
            self._all = self._load(self.files[0], batch=True)
            self.unmatched_files = []
            for j, ref in enumerate(self._all["stimulus"]):
                sid = matcher(ref)
                if sid is None:
                    self.unmatched_files.append(str(ref))
                elif sid in self.all_index:
                    raise DataError(f"stimulus {ref!r} appears twice (entries {self.all_index[sid]} "
                                    f"and {j})", file=self.files[0], field=spec.stimulus)
                else:
                    self.all_index[sid] = j

    @staticmethod
    def _files(pattern: str) -> list[Path]:
        p = Path(pattern)
        files = sorted(p.glob("*.npz")) if p.is_dir() else sorted(
            Path(f) for f in glob.glob(pattern) if f.endswith(".npz"))
        if not files:
            raise DataError("no .npz files found (give a folder or a glob)", file=pattern)
        return files

    def _vocab(self, mapping_dir: Path) -> tuple[dict[int, str] | None, Path | None]:
        if self.spec.vocab is None:
            return None, None
        path = Path(self.spec.vocab)
        path = path if path.is_absolute() else mapping_dir / path
        if not path.is_file():
            raise DataError("vocab file not found (a path relative to the mapping file's folder)",
                            file=path, field="logits.vocab")
        try:
            if path.suffix == ".json":
                obj = json.loads(path.read_text(encoding="utf-8"))
                vocab = ({int(k): str(v) for k, v in obj.items()} if isinstance(obj, dict)
                         else {i: str(t) for i, t in enumerate(obj)})
            else:
                vocab = dict(enumerate(path.read_text(encoding="utf-8").split("\n")))
        except (ValueError, UnicodeDecodeError) as err:
            raise DataError(f"cannot be read as a vocab: {err}", file=path,
                            field="logits.vocab") from None
        return vocab, path

    def _load(self, path: Path, *, batch: bool) -> dict[str, np.ndarray]:
        s = self.spec
        try:
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot be read as NPZ: {err}", file=path) from None
        names = {"values": s.values, "tokens": s.tokens or s.token_ids,
                 "step_names": s.step_names, "stimulus": s.stimulus if batch else None}
        out = {}
        for role, name in names.items():
            if name is None:
                continue
            if name not in npz.files:
                raise DataError(f"no array {name!r} (mapping key logits.{_role_key(s, role)}; "
                                f"arrays: {', '.join(npz.files)})", file=path, field=name)
            out[role] = npz[name]
        lead = 1 if batch else 0
        v, t = out["values"], out["tokens"]
        if v.ndim != 2 + lead or t.shape != v.shape:
            raise DataError(f"arrays disagree in shape: {s.values} {v.shape} vs "
                            f"{s.tokens or s.token_ids} {t.shape} (both [{'n, ' if batch else ''}"
                            "steps, k])", file=path, field=s.values)
        if "step_names" in out:
            sn = out["step_names"]
            if sn.shape not in (v.shape[lead:lead + 1], v.shape[:lead + 1]):
                raise DataError(f"arrays disagree in shape: {s.step_names} {sn.shape} vs "
                                f"{s.values} {v.shape} (one name per step)", file=path,
                                field=s.step_names)
        if batch and out["stimulus"].shape != v.shape[:1]:
            raise DataError(f"arrays disagree in shape: {s.stimulus} {out['stimulus'].shape} vs "
                            f"{s.values} {v.shape} (one stimulus per entry)", file=path,
                            field=s.stimulus)
        if s.token_ids is not None and not np.issubdtype(t.dtype, np.integer):
            raise DataError(f"token_ids array {s.token_ids!r} holds {t.dtype}, not integers",
                            file=path, field=s.token_ids)
        if not np.issubdtype(v.dtype, np.floating):
            raise DataError(f"values array {s.values!r} holds {v.dtype}, not floats", file=path,
                            field=s.values)
        out["path"] = path
        return out

    def arrays(self, sid: str) -> dict | None:
        if self.spec.per == "stimulus":
            f = self.by_stimulus.get(sid)
            return None if f is None else self._load(f, batch=False)
        j = self.all_index.get(sid)
        if j is None:
            return None
        a = self._all
        names = a.get("step_names")
        if names is not None and names.ndim == 2:
            names = names[j]
        return {"values": a["values"][j], "tokens": a["tokens"][j], "step_names": names,
                "path": a["path"], "entry": j}

    def records(self, sid: str) -> tuple[list[LogitRecord], list[Path]]:
        """The valence/arousal rating steps of one stimulus (a field without a step: step -1)."""
        a = self.arrays(sid)
        if a is None:
            return [_no_step(sid, f) for f in RATING_FIELDS], []
        s = self.spec
        where = f"stimulus {sid}" + (f", entry {a['entry']}" if "entry" in a else "")
        steps: dict[str, int] = {}
        if a.get("step_names") is not None:
            for i, name in enumerate(np.asarray(a["step_names"]).astype(str)):
                name = name.strip().lower()
                if name in RATING_FIELDS and name not in steps:
                    steps[name] = i
        else:
            for f, pos in (("valence", s.valence_step), ("arousal", s.arousal_step)):
                if pos is not None:
                    if pos >= a["values"].shape[0]:
                        raise DataError(f"{where}: {f}_step {pos} but the answer has "
                                        f"{a['values'].shape[0]} steps", file=a["path"],
                                        field=f"logits.{f}_step")
                    steps[f] = pos
        out = []
        for f in RATING_FIELDS:
            if f not in steps:
                out.append(_no_step(sid, f))
                continue
            i = steps[f]
            vals = np.asarray(a["values"][i])
            if s.token_ids is not None:
                ids = np.asarray(a["tokens"][i]).astype(np.int64)
                unknown = [int(x) for x in ids if x >= 0 and int(x) not in self.vocab]
                if unknown:
                    raise DataError(f"{where}, step {i}: token id {unknown[0]} is not in the vocab "
                                    f"{self.vocab_file}", file=a["path"], field=s.token_ids)
                keep = ids >= 0
                tokens = [self.vocab[int(x)] for x in ids[keep]]
            else:
                tokens_all = np.asarray(a["tokens"][i]).astype(str)
                keep = np.ones(len(tokens_all), bool)
                ids, tokens = np.full(len(tokens_all), -1, np.int64), list(tokens_all)
            keep &= ~np.isnan(vals)
            if s.token_ids is None:
                tokens = [t for t, k in zip(tokens, keep, strict=True) if k]
            vals = vals[keep]
            if s.values_are == "probabilities":
                if (vals < 0).any() or vals.sum() > 1 + PROB_TOLERANCE:
                    raise DataError(f"{where}, step {i}: probabilities must be >= 0 and sum to "
                                    f"<= 1 (they sum to {float(vals.sum()):.6g})", file=a["path"],
                                    field=s.values)
                # the log-probabilities whose exp is these probabilities exactly: answers
                # exported as probabilities come back as the stored numbers, bit for bit
                lps = logprobs_of(vals.astype(np.float64))
            else:
                if (vals > PROB_TOLERANCE).any() or np.logaddexp.reduce(
                        vals.astype(np.float64)) > np.log1p(PROB_TOLERANCE):
                    raise DataError(f"{where}, step {i}: log-probabilities must be <= 0 and their "
                                    "probabilities sum to <= 1", file=a["path"], field=s.values)
                lps = vals
            lps = lps.astype(np.float64)
            top = list(zip(ids[keep].tolist(), tokens, lps.tolist(), strict=True))
            dist = DigitDistribution(merge_digit_logprobs(top), "topk")
            out.append(LogitRecord(sid, f, i, ids[keep], tokens, lps, dist.logprobs, dist.mass,
                                   "topk"))
        return out, [a["path"]]


def _role_key(spec, role: str) -> str:
    return {"values": "values", "step_names": "step_names", "stimulus": "stimulus",
            "tokens": "tokens" if spec.tokens else "token_ids"}[role]


def _no_step(sid: str, f: str) -> LogitRecord:
    return LogitRecord(sid, f, -1, np.zeros(0, np.int64), [], np.zeros(0), np.full(9, np.nan),
                       0.0, "none")


# --- the import -------------------------------------------------------------------------------

def _field(row: SourceRow, name: str | None, key: str, path: Path, columns: set | None):
    if name is None:
        return None
    if name not in row.values:
        what = "column" if columns is not None else "field"
        raise DataError(f"no {what} {name!r} (named by mapping key predictions.{key})",
                        file=path, row=row.line, field=name)
    return row.values[name]


def run_import(params: Params, data: DataPaths, *, predictions: Path, mapping_file: Path,
               logits: str | None = None, model_id: str | None = None,
               condition: str | None = None, stimulus_set: str | None = None,
               allow_missing: bool = False, dry_run: bool = False,
               replace: bool = False) -> ImportReport:
    """Read, check and (unless ``dry_run``) store the answers; nothing is written on an error."""
    from emoface.backends import ModelRef, split_model_id

    mapping: ImportMap = load_mapping(mapping_file)
    pm = mapping.predictions
    if logits is not None and mapping.logits is None:
        raise ConfigError(f"{mapping_file}: --logits given but the mapping has no logits section")
    if model_id is not None:
        split_model_id(model_id)
    cli_condition = parse_condition(condition) if condition else None
    emotions = params.study.emotions
    set_name = stimulus_set or params.stimuli.set_name
    ss = load_stimulus_set(data.stimulus_set(set_name), params.study)
    matcher = _Matcher(ss, pm.stimulus.match)
    lg = (_Logits(mapping.logits, logits, mapping_file.parent, matcher, ss)
          if logits is not None else None)
    mapping_sha = sha256_file(mapping_file)
    source_sha = sha256_file(predictions)
    sha_of = dict(zip(ss.manifest["stimulus_id"], ss.manifest["sha256"], strict=True))

    rep = ImportReport(npz_unmatched=list(lg.unmatched_files) if lg is not None else [])
    groups: dict[tuple[str, str], dict[str, tuple[int, dict]]] = {}
    columns = None if pm.format == "jsonl" else set()
    for row in _read_rows(predictions, pm.format):
        rep.rows += 1
        ref = _field(row, pm.stimulus.field, "stimulus.field", predictions, columns)
        model = _text(_field(row, pm.model, "model", predictions, columns)).strip() or model_id
        if model is None:
            raise DataError("no model: give --model-id or map predictions.model", file=predictions,
                            row=row.line, field="model")
        if pm.model is not None:
            if model_id is not None and model != model_id:
                continue  # another model's row: --model-id selects
            try:
                split_model_id(model)
            except ConfigError as err:
                raise DataError(str(err), file=predictions, row=row.line, field=pm.model) from None
        cid = (_text(_field(row, pm.condition, "condition", predictions, columns)).strip()
               if pm.condition else None)
        if cid and cli_condition is not None and cid != cli_condition.condition_id:
            continue  # another condition's row: --condition selects
        try:
            cond = parse_condition(cid, where=pm.condition) if cid else (
                cli_condition or Condition())
        except DataError as err:
            raise DataError(str(err).split(": ", 1)[1], file=predictions, row=row.line,
                            field=pm.condition) from None
        sid = matcher(ref)
        if sid is None:
            rep.unmatched.append(f"line {row.line}: {_text(ref)!r}")
            continue
        bucket = groups.setdefault((model, cond.condition_id), {})
        if sid in bucket:
            raise DataError(f"duplicate: stimulus {sid} ({model}, {cond.condition_id}) already on "
                            f"line {bucket[sid][0]}", file=predictions, row=row.line,
                            field=pm.stimulus.field)
        values = {k: _field(row, getattr(pm, k), k, predictions, columns)
                  for k in ("label", "valence", "arousal", "raw")}
        bucket[sid] = (row.line, {"condition": cond, **values})
    if rep.unmatched and not allow_missing:
        raise DataError(f"{len(rep.unmatched)} row(s) match no image of set {set_name!r} by "
                        f"{pm.stimulus.match}: {'; '.join(rep.unmatched[:MAX_LISTED])}"
                        + (" ..." if len(rep.unmatched) > MAX_LISTED else "")
                        + " (--allow-missing imports the rest)", file=predictions,
                        field=pm.stimulus.field)
    if not groups:
        raise DataError("no rows to import" + (" for the --model-id / --condition given"
                                               if model_id or condition else ""), file=predictions)

    store = PredictionStore(data.root)
    code = code_version()
    plans = []
    for (model, cid), bucket in groups.items():
        cond = next(iter(bucket.values()))[1]["condition"]
        options = cond.options(params.inference)
        labels = resolve_labels(cond, ss, store, model, emotions)
        backend = ModelRef.parse(model).backend
        n_calls = 1 if backend == "fer" else calls_per_stimulus(cond.protocol)
        rows, records, sources = {}, {}, {predictions.resolve(): source_sha}
        for sid, (line, v) in bucket.items():
            row = _row(v, sid, line, predictions, pm, cond, model, backend, emotions, options,
                       labels, n_calls, sha_of[sid], source_sha, mapping_sha, code)
            rep.matched += 1
            if any(row[f"{f}_status"] not in USABLE for f in ("emotion", *RATING_FIELDS)):
                rep.unusable += 1
            rep.out_of_set += row["emotion_status"] == "out_of_set"
            rows[sid] = row
            if lg is not None:
                recs, files = lg.records(sid)
                for f in files:
                    sources.setdefault(f.resolve(), None)
                for r in recs:
                    rep.steps += 1
                    rep.steps_without_logits += r.step < 0
                    rep.steps_low_mass += r.step >= 0 and (
                        r.digit_mass < params.analysis.digit_mass_threshold)
                records[sid] = recs
        if lg is not None and lg.vocab_file is not None:
            sources.setdefault(lg.vocab_file.resolve(), None)
        rep.groups[f"{model} | {cid}"] = len(rows)
        plans.append((model, cond, options, labels, rows, records, sources))

    # check every row against the same schema the store's writer uses, before writing anything
    all_rows = [r for p in plans for r in p[4].values()]
    validate(_frame(all_rows), predictions_schema(emotions), file=predictions)
    folders = []
    for model, cond, _options, _labels, rows, _records, _sources in plans:
        folder = store.condition_dir(set_name, cond.condition_id, model)
        _refuse_native(folder, replace)
        folders.append(folder)
        chunks = batches(stimulus_inputs(ss), params.inference.batch_size)
        for i, chunk in enumerate(chunks):
            if not any(s.stimulus_id in rows for s in chunk):
                raise DataError(f"{model} {cond.condition_id}: no row for any stimulus of batch "
                                f"b{i:04d} ({chunk[0].stimulus_id} ... {chunk[-1].stimulus_id}); "
                                "every batch of inference.batch_size stimuli needs at least one",
                                file=predictions, field=pm.stimulus.field)
    rep.folders = [str(f) for f in folders]
    if dry_run:
        return rep

    for (model, cond, options, labels, rows, records, sources), folder in zip(plans, folders,
                                                                              strict=True):
        _write(store, folder, ss, cond, options, labels, model, rows, records, sources,
               mapping_file, mapping_sha, params)
    rep.written = True
    return rep


def _refuse_native(folder: Path, replace: bool) -> None:
    from emoface.results.imported import read_record

    if replace or read_record(folder) is not None or batchfiles.current_keys(folder) is None:
        return
    raise DataError("holds answers this pipeline asked the model for; importing would replace "
                    "them: pass --replace, or import into another --data folder", file=folder)


def _row(v: dict, sid: str, line: int, path: Path, pm, cond: Condition, model: str, backend: str,
         emotions, options, labels, n_calls: int, stim_sha: str, source_sha: str,
         mapping_sha: str, code: dict) -> dict:
    parsed: dict[str, Parsed] = {}
    if cond.protocol == "text_only":
        parsed["emotion"] = Parsed(None, "not_asked")
    elif pm.label is None:
        parsed["emotion"] = Parsed(None, "not_asked")
    else:
        parsed["emotion"] = parse_emotion(_text(v["label"]), emotions)
    for f in RATING_FIELDS:
        if getattr(pm, f) is None:
            parsed[f] = Parsed(None, "not_asked")
            continue
        p = parse_rating(_text(v[f]))
        if p.status == "out_of_range" and pm.out_of_range == "refuse":
            raise DataError(f"rating {v[f]!r} is outside 1-9 (another scale? map a 1-9 field, or "
                            "out_of_range: keep to keep it as not usable)", file=path, row=line,
                            field=getattr(pm, f))
        parsed[f] = p
    raw = [{"field": f, "text": _text(v[k])} for f, k in
           (("emotion", "label"), ("valence", "valence"), ("arousal", "arousal"))
           if getattr(pm, k) is not None]
    if pm.raw is not None:
        raw.append({"field": "raw", "text": _text(v["raw"])})
    return {
        "condition_id": cond.condition_id, "protocol": cond.protocol,
        "temperature": float(cond.temperature), "repeat": cond.work().repeat,
        "label_source": cond.label_source,
        "label_given": labels[sid] if labels is not None else None,
        "model_id": model, "backend": backend, "model_digest": UNKNOWN,
        "backend_version": UNKNOWN, "quantization": UNKNOWN,
        "simulated": backend == "simulated", "served_by": UNKNOWN,
        "stimulus_id": sid, "stimulus_sha256": stim_sha,
        "prompt_version": UNKNOWN, "parser_version": PARSER_VERSION,
        "options": json.dumps(options.as_dict(), sort_keys=True),
        "emotion": parsed["emotion"].value, "emotion_status": parsed["emotion"].status,
        **{f: parsed[f].value for f in RATING_FIELDS},
        **{f"{f}_status": parsed[f].status for f in RATING_FIELDS},
        "raw_answers": json.dumps(raw, ensure_ascii=False),
        "n_calls": n_calls, "attempts": n_calls, "latency_s": 0.0, "prompt_tokens": 0,
        "completion_tokens": 0, "cached_tokens": 0,
        "source": "imported", "source_file": str(path.resolve()), "source_sha256": source_sha,
        "mapping_sha256": mapping_sha,
        "emoface_version": code["package_version"], "code_commit": code["git_commit"],
        "code_dirty": code["git_dirty"],
    }


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema_overrides={
        "label_source": pl.String, "label_given": pl.String, "emotion": pl.String,
        "valence": pl.Float64, "arousal": pl.Float64, "served_by": pl.String,
        "code_dirty": pl.Boolean})


def _write(store: PredictionStore, folder: Path, ss: StimulusSet, cond: Condition, options,
           labels, model: str, rows: dict, records: dict, sources: dict, mapping_file: Path,
           mapping_sha: str, params: Params) -> None:
    srcs = [{"path": str(p), "sha256": sha or sha256_file(p)} for p, sha in sources.items()]
    digest = hashlib.sha256(json.dumps([mapping_sha, srcs], sort_keys=True).encode()).hexdigest()
    chunks = batches(stimulus_inputs(ss), params.inference.batch_size)
    pks = [plan_key(cond, options, c, labels, model_id=model) for c in chunks]
    keys = [hashlib.sha256(f"{pk}|imported|{digest}".encode()).hexdigest() for pk in pks]
    record = {"model_id": model, "condition_id": cond.condition_id, "plan_keys": pks,
              "keys": keys, "sources": srcs,
              "mapping": {"path": str(mapping_file.resolve()), "sha256": mapping_sha}}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / RECORD) as tmp:  # first: an interrupted import is never "native"
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    for i, (chunk, pk, key) in enumerate(zip(chunks, pks, keys, strict=True)):
        chunk_rows = [rows[s.stimulus_id] for s in chunk if s.stimulus_id in rows]
        chunk_recs = [r for s in chunk if s.stimulus_id in rows
                      for r in records.get(s.stimulus_id, [])]
        if not store.is_done(folder, i, key):
            store.write_batch(folder, i, key, chunk_rows, chunk_recs, params.study.emotions,
                              plan_key=pk)
    store.set_current(folder, keys)
