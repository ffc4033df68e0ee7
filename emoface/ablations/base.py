"""What an ablation module declares, and the work items it returns.

An ablation is one module in this package that defines ``ABLATION = Ablation(...)``: the plan's
metadata (id, name, priority, tiers, paper section, hypothesis, interpretation rule, the
researchers' hour estimate), the work it needs (:attr:`Ablation.work`), its params model (the
``ablations.<ID>`` section of params.yaml, or none), its analysis and its figures. The registry
(``emoface.ablations``) lists the modules; everything else asks the registry.

Module bodies stay light (metadata, params model, conditions, numpy): analysis and figure code
import polars, scipy, statsmodels, matplotlib and the analysis package inside the functions, so
planning a run never pays for them and the registry never imports ``emoface.analysis`` (which
imports the registry). What several ablations share (the result record, decision rules, Holm,
provenance, bootstrap and paired-arm helpers) is in ``emoface.analysis.common``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from emoface.ablations.report_spec import ReportSpec
from emoface.inference.conditions import Condition
from emoface.prompts import calls_per_stimulus

if TYPE_CHECKING:  # only for annotations: importing these here would be circular
    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params

BASELINE = Condition()


@dataclass(frozen=True)
class WorkItem:
    """One unit of model work: predictions for (set, model, condition) or hidden states."""

    kind: Literal["predictions", "hidden"]
    stimulus_set: str
    model_id: str
    condition: Condition | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        cid = self.condition.condition_id if self.condition else "hidden_states"
        return (self.kind, self.stimulus_set, self.model_id, cid)

    @property
    def label(self) -> str:
        cid = self.condition.condition_id if self.condition else "hidden_states"
        return f"{self.model_id} {cid} [{self.stimulus_set}]"

    @property
    def depends_on(self) -> WorkItem | None:
        """The work item whose committed predictions this one needs before it can be planned
        (text-only with the model's own labels: that model's answers in the condition they come
        from, on the same set), or None."""
        source = self.condition.labels_from if self.condition is not None else None
        return (None if source is None
                else WorkItem("predictions", self.stimulus_set, self.model_id, source))

    def calls_per_stimulus(self) -> int:
        if self.condition is None or self.model_id.startswith("fer/"):
            return 1  # one forward pass: hidden states, or a classifier's prediction
        return calls_per_stimulus(self.condition.protocol)


WorkFn = Callable[["Params", Sequence[str]], list[WorkItem]]
AnalysisFn = Callable[["AnalysisContext"], "AblationResult"]
FiguresFn = Callable[["AblationResult", Path], list[Path]]


@dataclass(frozen=True)
class Headline:
    """Which row and columns of a result table are the ablation's headline (DVC metrics:
    ``data/results/<ID>/headline.json``, emoface/analysis/headline.py): the primary estimate,
    its CI, its multiplicity-adjusted p. ``pick``: "first" = the first row with ``p_adj`` set,
    in table order (first study model, primary grouping), else the first row; "max" = the
    largest estimate."""

    table: str
    estimate: str
    ci_low: str | None
    ci_high: str | None
    p_adj: str | None
    pick: str = "first"


@dataclass(frozen=True)
class SimulatedDesign:
    """How the calibration simulator plants one ablation's effect (emoface/analysis/simulate.py,
    ``bench/verdict_calibration.py``, ``emoface power``): ``spec(effect)`` gives the simulated
    models (``{"models": [...]}``, knobs of the simulated rater in their ids) with the effect
    planted at ``effect``; ``nulls`` the boundary (or boundaries) of the hypothesis; ``plan`` the
    "effect" scenario and ``plan_source`` where its size comes from; ``curve`` the grid of
    ``--curve``. Optional readers of one simulated study's result: ``estimate`` the planted
    quantity as the analysis estimated it, ``parts`` the outcomes of the rule's parts (those the
    ablation reports one by one) by name."""

    ablation: str
    effect: str  # what the effect is, in words
    spec: Callable[[float], dict]
    nulls: tuple[float, ...]
    plan: float
    plan_source: str
    curve: tuple[float, ...]
    estimate: Callable[[AblationResult], float] | None = None
    parts: Callable[[AblationResult], dict[str, str]] | None = None


@dataclass(frozen=True)
class Ablation:
    """One ablation: what the plan says about it, what it needs, computes, draws and reads.

    ``work(params, models)`` returns every work item the analysis reads, its baseline
    dependency included; ``analysis(ctx)`` returns an ``AblationResult``; ``figures(result,
    folder)`` writes PNGs and returns their paths; ``params`` is the pydantic model of the
    ``ablations.<id>`` section of params.yaml (None: the ablation has no parameters);
    ``report`` its summary question, decision rows and section tables.

    The baseline (``emoface/ablations/baseline.py``) is one too, the analysis every ablation is
    read against: it ``decides`` nothing (no hypothesis, no row in the report's summary) and
    overrides :attr:`title`; the registry returns it with :func:`emoface.ablations.get` and lists
    it first in :func:`emoface.ablations.with_baseline`, so no code outside this package asks for
    it by name.
    """

    id: str
    name: str
    priority: int
    tiers: tuple[str, ...]
    paper_section: str
    hypothesis: str
    interpretation: str
    planned_hours: float | None  # the researchers' Mac estimate, for reference (None: not planned)
    needs: str  # one line: what runs
    work: WorkFn
    analysis: AnalysisFn
    figures: FiguresFn
    params: type[BaseModel] | None = None
    headline: Headline | None = None  # its DVC metrics row (None: outcome only)
    # its place in the report: the summary's question and decision rows, the section's tables
    # (emoface/ablations/report_spec.py); None: the report shows every column of main.csv
    report: ReportSpec | None = None
    # seconds the analysis (tables and figures) takes on the embedded set with the default
    # parameters: the dry run's estimate until it has run in this data folder (then the time it
    # took there is used)
    analysis_seconds: float = 30.0
    # whether it tests a hypothesis: a row in the report's summary, its decision rule and a
    # "could it have told?" line (False: it describes, as the baseline does)
    decides: bool = True
    # how the calibration simulator plants its effect (None: the design is in
    # emoface/analysis/simulate.py, or there is none)
    simulated_design: SimulatedDesign | None = None

    @property
    def title(self) -> str:
        """Its section's heading in the report."""
        return f"{self.id}: {self.name} — paper: {self.paper_section}"


def baseline_items(params: Params, models: Sequence[str]) -> list[WorkItem]:
    """The baseline: every study model, plus the FER classifiers the study compares them with."""
    s = params.stimuli.set_name
    return [WorkItem("predictions", s, m, BASELINE)
            for m in dict.fromkeys([*models, *params.models.fer])]


def baseline_only(params: Params, models: Sequence[str]) -> list[WorkItem]:
    """The work of an ablation that only analyses the baseline's predictions and logits."""
    return baseline_items(params, models)


def predictions(params: Params, models: Sequence[str], conditions: Sequence[Condition],
                stimulus_set: str | None = None) -> list[WorkItem]:
    """Prediction work items for every (model, condition) on one stimulus set (default: the
    study's)."""
    s = stimulus_set or params.stimuli.set_name
    return [WorkItem("predictions", s, m, c) for m in models for c in conditions]

