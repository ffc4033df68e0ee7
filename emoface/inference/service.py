"""One call that does what a researcher means by "run this condition for this model".

Loads the stimulus set, builds the backend, resolves text-only labels, runs the missing batches
with a rich progress bar when asked, and returns a summary. Used by the CLI; the Prefect tasks use
the same pieces batch by batch.
"""

from __future__ import annotations

from pydantic import ValidationError

from emoface.backends import make_backend
from emoface.config import Params
from emoface.errors import ConfigError, DataError
from emoface.inference.conditions import Condition
from emoface.inference.engine import baseline_labels, intended_labels, plan_condition
from emoface.inference.preflight import preflight
from emoface.inference.scheduler import plan_units, run_units
from emoface.inference.store import PredictionStore
from emoface.paths import DataPaths
from emoface.stimuli.store import StimulusSet, load_stimulus_set


def resolve_labels(condition: Condition, stimulus_set: StimulusSet, store: PredictionStore,
                   model_id: str, emotions) -> dict[str, str] | None:
    """Labels for a text-only condition: the intended ones, or the model's own answers in the
    condition they come from (:attr:`Condition.labels_from`)."""
    if condition.label_source is None:
        return None
    source = condition.labels_from
    if source is None:
        return intended_labels(stimulus_set)
    folder = store.condition_dir(stimulus_set.paths.root.name, source.condition_id, model_id)
    try:
        baseline = store.read(folder, emotions)
    except DataError as err:
        raise DataError(f"text-only with baseline labels needs the baseline of {model_id} "
                        f"first ({err})") from None
    return baseline_labels(baseline)


def run_condition_for(params: Params, data: DataPaths, model_id: str, *, protocol: str,
                      temperature: float = 0.0, repeat: int = 1, label_source: str | None = None,
                      stimulus_set: str | None = None, progress: bool = False) -> dict:
    emotions = params.study.emotions
    try:
        condition = Condition(protocol=protocol, temperature=temperature, repeat=repeat,
                              label_source=label_source)
    except ValidationError as err:  # the command line's values: one line naming the option
        e = err.errors()[0]
        option = str(e["loc"][0]).replace("_", "-") if e["loc"] else "condition"
        raise ConfigError(f"--{option}: {e['msg'].removeprefix('Value error, ')} "
                          f"(got {e.get('input')!r})") from None
    ss = load_stimulus_set(data.stimulus_set(stimulus_set or params.stimuli.set_name), params.study)
    preflight([model_id], params.inference, emotions=emotions)  # seconds, before any batch
    backend = make_backend(model_id, params.inference, emotions=emotions, stimulus_set=ss)
    store = PredictionStore(data.root)
    labels = resolve_labels(condition, ss, store, backend.info.model_id, emotions)
    specs = plan_condition(backend, ss, condition, condition.options(params.inference), store,
                           batch_size=params.inference.batch_size, labels=labels)
    units = plan_units([(backend, specs)], store, emotions, image_major=False)
    if progress and units:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"{model_id} {condition.condition_id}",
                                total=sum(len(u.first.stimuli) for u in units))
            calls = run_units(units, store, emotions, lambda n: bar.advance(task, n))
    else:
        calls = run_units(units, store, emotions)
    rows = store.read(specs[0].folder, emotions, n_batches=len(specs))
    backend.close()
    return {"model_id": backend.info.model_id, "condition_id": condition.condition_id,
            "batches": len(specs), "batches_run": len(units), "calls": calls, "rows": rows.height,
            "folder": str(specs[0].folder)}
