"""The ablation registry, and the plan: what work a selection needs.

Each ablation is one module of this package defining ``ABLATION`` (see
:class:`emoface.ablations.base.Ablation`): its metadata, the work it needs, its params model, its
analysis and its figures. :data:`MODULES` lists them once, in the plan's execution order; they are
imported by name on first use (module bodies are light; analysis code loads inside the functions).
Tiers, execution order, the dry-run plan, the flow, the report, the figures and the params section
``ablations`` all follow from the registry; an unknown id is an error listing the known ones.

The baseline (``baseline.py``, every study model and FER classifier at context-carry, T = 0) is
an :class:`Ablation` too, with the same declarations; it is not a selectable id (every run does
it), so :func:`registry`, :func:`known_ids` and the tiers leave it out, while :func:`get` returns
it and :func:`with_baseline` puts it first wherever results are listed (analyses, the report,
its key, the export's ``--only``).

Adding an ablation: write ``emoface/ablations/aNN_name.py`` with ``ABLATION = Ablation(...)`` and
add its module name to :data:`MODULES`.

Work is deduplicated by identity: (kind, stimulus set, model id, condition work id). A T = 0
condition's repeats are one piece of work, so A3 at T = 0 *is* the baseline, and A4's 4-bit arm is
the baseline when the 4-bit model is a study model.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, create_model

from emoface.ablations.base import BASELINE, Ablation, WorkItem, baseline_items

if TYPE_CHECKING:
    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params

__all__ = ["BASELINE", "MODULES", "Ablation", "Plan", "WorkItem", "baseline_ablation",
           "baseline_items", "build_plan", "execution_order", "get", "known_ids", "params_model",
           "registry", "run_analysis", "select", "tiers", "with_baseline", "work_for"]

# The plan's execution order (A5, A8, A1, A2, A3, A6, A4, A7, A9), then the project's own.
MODULES: tuple[str, ...] = (
    "a5_dark_knowledge", "a8_fpr_by_race", "a1_text_only", "a2_single_shot", "a3_temperature",
    "a6_more_models", "a4_quantization", "a7_real_faces", "a9_hidden_states",
    "a10_test_retest", "a11_calibration",
)


def _id_number(ablation_id: str) -> int:
    digits = re.sub(r"\D", "", ablation_id)
    return int(digits) if digits else 0


@cache
def registry() -> dict[str, Ablation]:
    """Every registered ablation by id, in execution order (modules imported on first call)."""
    found: dict[str, Ablation] = {}
    for name in MODULES:
        spec = getattr(importlib.import_module(f"{__name__}.{name}"), "ABLATION", None)
        if not isinstance(spec, Ablation):
            raise TypeError(f"emoface/ablations/{name}.py defines no ABLATION = Ablation(...)")
        if spec.id in found:
            raise ValueError(f"ablation id {spec.id} is declared twice (emoface/ablations/{name}.py)")
        found[spec.id] = spec
    return found


@cache
def baseline_ablation() -> Ablation:
    """The baseline (``baseline.py``): the analysis every ablation is read against."""
    spec = importlib.import_module(f"{__name__}.baseline").ABLATION
    if spec.id in registry():
        raise ValueError(f"ablation id {spec.id} is declared twice (emoface/ablations/baseline.py)")
    return spec


def with_baseline(ablation_ids: Sequence[str]) -> list[str]:
    """The baseline's id, then ``ablation_ids``: every analysis a selection writes results for."""
    return [baseline_ablation().id, *ablation_ids]


def known_ids() -> list[str]:
    """Registered ids in numeric order (A1, A2, ..., A10, A11)."""
    return sorted(registry(), key=_id_number)


def get(ablation_id: str) -> Ablation:
    """The ablation with this id (the baseline's included); an unknown id is an error listing
    the known ones."""
    if ablation_id == baseline_ablation().id:
        return baseline_ablation()
    try:
        return registry()[ablation_id]
    except KeyError:
        raise ValueError(f"unknown ablation {ablation_id!r} (known: "
                         f"{', '.join(known_ids())})") from None


def execution_order() -> tuple[str, ...]:
    return tuple(registry())


def tiers() -> dict[str, tuple[str, ...]]:
    """Tier name -> ids (numeric order), tiers from the smallest to the largest."""
    members: dict[str, list[str]] = {}
    for aid in known_ids():
        for t in registry()[aid].tiers:
            members.setdefault(t, []).append(aid)
    return {t: tuple(ids) for t, ids in sorted(members.items(), key=lambda kv: (len(kv[1]), kv[0]))}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


@cache
def params_model() -> type[BaseModel]:
    """The ``ablations`` section of params.yaml: one key per ablation that has a params model."""
    fields = {a.id: (a.params, a.params()) for a in registry().values() if a.params is not None}
    fields = dict(sorted(fields.items(), key=lambda kv: _id_number(kv[0])))
    model = create_model("AblationsParams", __base__=_Section, **fields)
    model.__doc__ = "One section per ablation with parameters (from the ablation registry)."
    return model


def __getattr__(name: str):  # PEP 562: the registry-derived constants, computed on first use
    if name == "REGISTRY":
        return registry()
    if name == "EXECUTION_ORDER":
        return execution_order()
    if name == "TIERS":
        return tiers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def select(*, priority: int | None = None, tier: str | None = None,
           only: Sequence[str] | None = None) -> list[str]:
    """Ablation ids in the plan's execution order for one of the three ways of selecting."""
    if only:
        unknown = [a for a in only if a not in registry()]
        if unknown:
            raise ValueError(f"unknown ablation(s): {', '.join(unknown)} "
                             f"(known: {', '.join(known_ids())})")
        wanted = set(only)
    elif tier:
        known = tiers()
        if tier not in known:
            raise ValueError(f"unknown tier {tier!r} (known: {', '.join(known)})")
        wanted = set(known[tier])
    else:
        p = 1 if priority is None else priority
        wanted = {a.id for a in registry().values() if a.priority <= p}
    return [a for a in execution_order() if a in wanted]


def work_for(ablation_id: str, params: Params, models: Sequence[str]) -> list[WorkItem]:
    """Every work item the ablation needs, its baseline dependency included."""
    return get(ablation_id).work(params, models)


def run_analysis(ablation_id: str, ctx: AnalysisContext) -> AblationResult:
    """Run one analysis by id (the baseline's included)."""
    return get(ablation_id).analysis(ctx)


@dataclass
class Plan:
    ablations: list[str]
    models: list[str]
    per_ablation: dict[str, list[WorkItem]] = field(default_factory=dict)
    unique: list[WorkItem] = field(default_factory=list)

    def analyses(self, params: Params) -> dict[str, list[WorkItem]]:
        """Every analysis the plan writes results for (the baseline first) -> the work it reads."""
        base = baseline_ablation()
        return {base.id: base.work(params, self.models), **self.per_ablation}


def build_plan(params: Params, ablation_ids: Sequence[str], models: Sequence[str]) -> Plan:
    plan = Plan(list(ablation_ids), list(models))
    seen: dict[tuple, WorkItem] = {}
    for item in baseline_ablation().work(params, models):
        seen.setdefault(item.key, item)
    for a in ablation_ids:
        items = work_for(a, params, models)
        plan.per_ablation[a] = items
        for item in items:
            seen.setdefault(item.key, item)
    plan.unique = list(seen.values())
    return plan
