"""Is anything to do? One check per condition and per analysis, without Prefect.

* inference: every batch of every work item is committed under the key the current plan gives
  (model digests included, so each backend is asked for its model info) and verifies;
* analyses: the key of what an analysis reads (the commit records of its current input batches),
  the analysis parameters and the analysis code, recorded in ``results/<ID>/analysis-key.json``
  when it ran, is unchanged and its ``metrics.json`` is the one it wrote;
* the report: ``results/report-key.json`` matches the metrics, code and data it was written from
  (when only the report is out of date, e.g. after a commit, it is rewritten here, which is cheap).

``flows/ablations.py`` uses :func:`nothing_to_do` to skip a no-change re-run entirely; the
Prefect tasks use the same keys for their caches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from emoface import __version__
from emoface.ablations import Plan, WorkItem, with_baseline
from emoface.config import Params
from emoface.errors import DataError, EmofaceError
from emoface.inference import batchfiles
from emoface.inference.store import LAYERS_RECORD, HiddenStateStore, PredictionStore
from emoface.io import atomic_path, sha256_file
from emoface.paths import HEADLINE_FILE, DataPaths
from emoface.provenance import analysis_code_hash, code_version, numerical_versions

ANALYSIS_KEY = "analysis-key.json"
REPORT_KEY = "report-key.json"


def inputs_digest(items: Sequence[WorkItem], data: DataPaths) -> str | None:
    """Digest of the commit records of every current input batch (sizes verified), or None
    when one is missing, outdated or damaged."""
    h = hashlib.sha256()
    for it in items:
        if it.kind == "hidden":
            hs = HiddenStateStore(data.root)
            folder = hs.model_dir(it.stimulus_set, it.model_id)
            if hs.layers_current(folder, checksums=False) is not None:
                return None
            h.update((folder / LAYERS_RECORD).read_bytes())
            continue
        folder = PredictionStore(data.root).condition_dir(
            it.stimulus_set, it.condition.condition_id, it.model_id)
        keys = batchfiles.current_keys(folder)
        if keys is None:
            return None
        for i, key in enumerate(keys):
            if not batchfiles.check(folder, i, key, PredictionStore.SUFFIXES, checksums=False).done:
                return None
            h.update(batchfiles.record_file(folder, i).read_bytes())
    return h.hexdigest()


def verify_inputs(items: Sequence[WorkItem], data: DataPaths) -> int:
    """Every current input batch of ``items`` checked as the readers check it (sizes and SHA-256
    against its commit record; hidden-state layers against ``layers.json``): what ``--stage
    analyses`` does before calling anything up to date, since it cannot redo a batch itself.
    Raises DataError naming the first missing, outdated or damaged batch and what to run; returns
    the number of folders checked."""
    checked: set[Path] = set()
    for it in items:
        if it.kind == "hidden":
            hs = HiddenStateStore(data.root)
            folder = hs.model_dir(it.stimulus_set, it.model_id)
            if folder in checked:
                continue
            why = hs.layers_current(folder, checksums=True)
            if why is not None:
                raise DataError(f"hidden states not usable: {why}; run the inference stage "
                                "(or the whole run) to redo them", file=folder)
        else:
            folder = PredictionStore(data.root).condition_dir(
                it.stimulus_set, it.condition.condition_id, it.model_id)
            if folder in checked:
                continue
            batchfiles.require_current(folder, PredictionStore.SUFFIXES, checksums=True,
                                       what=it.label)
        checked.add(folder)
    return len(checked)


def analysis_key(ablation_id: str, params: Params, data: DataPaths, models: Sequence[str],
                 items: Sequence[WorkItem]) -> str | None:
    """What an analysis's result depends on: inputs, parameters, code. None: inputs not ready."""
    digest = inputs_digest(items, data)
    if digest is None:
        return None
    h = hashlib.sha256()
    h.update(f"{ablation_id}|{__version__}|{list(models)}|".encode())
    h.update(params.model_dump_json(include={"study", "analysis", "ablations", "stimuli"}).encode())
    h.update(f"|code {analysis_code_hash()}|inputs {digest}|".encode())
    return h.hexdigest()


def _metrics(data: DataPaths, ablation_id: str) -> Path:
    return data.root / "results" / ablation_id / "metrics.json"


def record_analysis(ablation_id: str, key: str | None, data: DataPaths,
                    seconds: float | None = None) -> None:
    """Remember the key an analysis's written results belong to (after it wrote them), and how
    long it took (``seconds``: the dry run's estimate of the next time it runs)."""
    if key is None:
        return
    out = _metrics(data, ablation_id)
    rec = {"key": key, "metrics_sha256": sha256_file(out)}
    if seconds is not None:
        rec["seconds"] = round(seconds, 2)
    _write(out.parent / ANALYSIS_KEY, rec)


def analysis_is_current(ablation_id: str, key: str | None, data: DataPaths) -> bool:
    out = _metrics(data, ablation_id)
    rec = _read(out.parent / ANALYSIS_KEY)
    return (key is not None and rec is not None and out.exists() and rec.get("key") == key
            and rec.get("metrics_sha256") == sha256_file(out)
            and (out.parent / HEADLINE_FILE).exists())  # the DVC metrics file beside it


def report_key(data: DataPaths, ablation_ids: Sequence[str], data_files: Sequence[Path]) -> str:
    """What report.md is written from: the metrics files, the data files, code and versions."""
    h = hashlib.sha256(json.dumps({"ids": list(ablation_ids), "code": code_version(),
                                   "code_hash": analysis_code_hash(),
                                   "versions": numerical_versions()}, sort_keys=True).encode())
    for aid in with_baseline(ablation_ids):
        m = _metrics(data, aid)
        h.update(f"{aid}:{sha256_file(m) if m.exists() else '-'}|".encode())
    for f in data_files:
        h.update(f"{Path(f).name}:{sha256_file(Path(f)) if Path(f).exists() else '-'}|".encode())
    return h.hexdigest()


def record_report(data: DataPaths, key: str) -> None:
    report = data.root / "results" / "report.md"
    _write(data.root / "results" / REPORT_KEY, {"key": key, "report_sha256": sha256_file(report)})


def report_is_current(data: DataPaths, key: str) -> bool:
    report = data.root / "results" / "report.md"
    rec = _read(data.root / "results" / REPORT_KEY)
    return (rec is not None and report.exists() and report.with_suffix(".html").exists()
            and rec.get("key") == key
            and rec.get("report_sha256") == sha256_file(report))


def report_inputs(params: Params, data: DataPaths) -> list[Path]:
    """The data files whose digests the report's provenance lists."""
    s = data.stimulus_set(params.stimuli.set_name)
    return [s.manifest, s.norms]


def _write(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def inference_is_current(items: Sequence[WorkItem], params: Params, data: DataPaths) -> bool:
    """Every batch of every item is committed under its current key and verifies (checksums)."""
    from emoface.backends import make_backend
    from emoface.inference.engine import (
        hidden_states_complete,
        pending_specs,
        plan_condition,
        plan_hidden_states,
    )
    from emoface.inference.service import resolve_labels
    from emoface.results.imported import build_or_stand_in
    from emoface.stimuli.store import load_stimulus_set

    sets, backends = {}, {}
    store, hstore = PredictionStore(data.root), HiddenStateStore(data.root)
    try:
        for it in items:
            if not data.stimulus_set(it.stimulus_set).manifest.exists():
                return False
            if it.stimulus_set not in sets:
                sets[it.stimulus_set] = load_stimulus_set(data.stimulus_set(it.stimulus_set),
                                                          params.study)
            ss = sets[it.stimulus_set]
            if (it.model_id, it.stimulus_set) not in backends:
                backends[(it.model_id, it.stimulus_set)] = build_or_stand_in(
                    it.model_id, lambda it=it, ss=ss: make_backend(
                        it.model_id, params.inference, emotions=params.study.emotions,
                        stimulus_set=ss), data.root)
            backend = backends[(it.model_id, it.stimulus_set)]
            if it.kind == "hidden":
                plan = plan_hidden_states(backend, ss, hstore, params.study.emotions,
                                          batch_size=params.inference.batch_size, record=False)
                if not hidden_states_complete(plan, hstore):
                    return False
                continue
            labels = resolve_labels(it.condition, ss, store, backend.info.model_id,
                                    params.study.emotions)
            specs = plan_condition(backend, ss, it.condition, it.condition.options(params.inference),
                                   store, batch_size=params.inference.batch_size, labels=labels,
                                   record=False)  # a check writes nothing
            if pending_specs(specs, store):
                return False
    except EmofaceError:
        return False  # e.g. a server down or a baseline missing: the run says what is wrong
    finally:
        for b in backends.values():
            b.close()
    return True


def nothing_to_do(plan: Plan, params: Params, data: DataPaths, *, inference: bool = True,
                  analyses: bool = True, calls_remaining: int | None = None) -> dict | None:
    """The outcome of each selected analysis when a run would change nothing, else None.

    Cheap checks first: the dry run's count of calls still to make (``calls_remaining``, known
    without asking a model server), then the analysis keys (commit records and sizes); only then
    every batch against its full key (backends asked for their model digests, checksums)."""
    if inference and calls_remaining:
        return None
    outcomes = {}
    if analyses:
        for aid, items in plan.analyses(params).items():
            if not analysis_is_current(aid, analysis_key(aid, params, data, plan.models, items),
                                       data):
                return None
            outcomes[aid] = json.loads(_metrics(data, aid).read_text()).get("outcome")
    if inference and not inference_is_current(list(plan.unique), params, data):
        return None
    if analyses:
        files = report_inputs(params, data)
        key = report_key(data, plan.ablations, files)
        if not report_is_current(data, key):
            # e.g. a new commit: only the report's provenance changes; rewrite it, no flow needed
            from emoface.analysis.report import write_report

            write_report(data.root / "results", plan.ablations, files, alpha=params.analysis.alpha)
            record_report(data, key)
    return outcomes
