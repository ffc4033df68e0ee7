"""The nine ablations of the plan as data, and the plan: what work a selection needs.

Each :class:`Ablation` holds what the plan says about it (id, name, priority, tiers, paper
section, hypothesis, interpretation rule) and what it needs: the work items (conditions x models x
stimulus sets, or hidden-state extraction) and the analysis it runs. The baseline (context-carry,
image, T = 0, default quantization, logits captured, every study model) is the dependency of all.

Work is deduplicated by identity: (kind, stimulus set, model id, condition work id). A T = 0
condition's repeats are one piece of work, so A3 at T = 0 *is* the baseline, and A4's 4-bit arm is
the baseline when the 4-bit model is a study model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from emoface.config import Params
from emoface.inference.conditions import Condition
from emoface.prompts import calls_per_stimulus

TIERS: dict[str, tuple[str, ...]] = {
    "minimal": ("A1", "A2", "A5", "A8"),
    "competitive": ("A1", "A2", "A3", "A4", "A5", "A6"),
    "complete": ("A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9"),
}
EXECUTION_ORDER = ("A5", "A8", "A1", "A2", "A3", "A6", "A4", "A7", "A9")
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

    def calls_per_stimulus(self) -> int:
        if self.condition is None or self.model_id.startswith("fer/"):
            return 1  # one forward pass: hidden states, or a classifier's prediction
        return calls_per_stimulus(self.condition.protocol)


@dataclass(frozen=True)
class Ablation:
    id: str
    name: str
    priority: int
    paper_section: str
    hypothesis: str
    interpretation: str
    analysis: str  # name of the analysis function in emoface.analysis.ablations
    planned_hours: float  # the researchers' Mac estimate, for reference only
    needs: str = ""  # one line: what runs

    @property
    def tiers(self) -> tuple[str, ...]:
        return tuple(t for t, ids in TIERS.items() if self.id in ids)


REGISTRY: dict[str, Ablation] = {a.id: a for a in [
    Ablation("A1", "text-only arousal", 1, "strength-inversion claim",
             "Arousal ratings given the image and label are largely reproduced from the label alone.",
             "High corr(image+label arousal, label-only arousal) => the arousal 'advantage' is a "
             "language prior, not perception.", "a1_text_only", 2.0,
             "text-only prompts with each model's own baseline label, both models"),
    Ablation("A2", "single-shot prompting", 1, "context-carry confound",
             "Context-carry anchoring suppresses within-category variance.",
             "Within-category SD rises in single-shot => context-carry anchoring suppresses "
             "variance.", "a2_single_shot", 2.0,
             "one JSON prompt per image, both models"),
    Ablation("A3", "temperature", 2, "fixed-value pattern",
             "Greedy decoding (the output constraint) causes the fixed values.",
             "Within-category SD rises with T => the output constraint is the main cause.",
             "a3_temperature", 8.0, "T in the grid x repeats, both models"),
    Ablation("A4", "FP16 vs 4-bit", 2, "quantization share",
             "4-bit quantization removes part of the within-category variance.",
             "Expected a little more variance at FP16 (an estimated 20-30 % restored).",
             "a4_quantization", 3.0, "Gemma3-4B in FP16 and 4-bit, T = 0"),
    Ablation("A5", "dark knowledge", 2, "Section 5.1",
             "The digit distribution still discriminates inside a category even when the argmax "
             "does not.",
             "Entropy > 0 and expected ratings varying within a category => collapse is an "
             "output-level effect.", "a5_dark_knowledge", 1.0,
             "analysis of the baseline logits"),
    Ablation("A6", "more VLMs", 2, "generalisation",
             "The findings generalise beyond two models.",
             "The same pattern (kappa, collapse) across N >= 4 models => it generalises.",
             "a6_more_models", 4.0, "baseline protocol on the extra models"),
    Ablation("A7", "real faces", 3, "OOD",
             "Part of the effects come from AI-generated faces being out of distribution.",
             "Metrics that differ between AI and real faces => an out-of-distribution effect.",
             "a7_real_faces", 6.0, "baseline protocol on a real-face set, VLMs + FER"),
    Ablation("A8", "FPR by race", 3, "Section 4.5",
             "Angry is over-attributed to one race group among faces that are not angry.",
             "FPR(Black) > FPR(Korean) => real over-attribution, not an accuracy gap.",
             "a8_fpr_by_race", 0.5, "analysis of the baseline predictions"),
    Ablation("A9", "hidden states", 3, "representation vs output",
             "The representation holds within-category information the output lacks.",
             "CKA/RSA with the human ratings above the permutation null, within categories => "
             "information in the representation, not in the output.", "a9_hidden_states", 4.0,
             "hidden states of Gemma3 per layer"),
]}


def select(*, priority: int | None = None, tier: str | None = None,
           only: Sequence[str] | None = None) -> list[str]:
    """Ablation ids in the plan's execution order for one of the three ways of selecting."""
    if only:
        unknown = [a for a in only if a not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown ablation(s): {', '.join(unknown)} (known: A1-A9)")
        wanted = set(only)
    elif tier:
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r} (known: {', '.join(TIERS)})")
        wanted = set(TIERS[tier])
    else:
        p = 1 if priority is None else priority
        wanted = {a.id for a in REGISTRY.values() if a.priority <= p}
    return [a for a in EXECUTION_ORDER if a in wanted]


def baseline_items(params: Params, models: Sequence[str]) -> list[WorkItem]:
    """The baseline: every study model, plus the FER classifiers the study compares them with."""
    s = params.stimuli.set_name
    return [WorkItem("predictions", s, m, BASELINE)
            for m in dict.fromkeys([*models, *params.models.fer])]


def work_for(ablation_id: str, params: Params, models: Sequence[str]) -> list[WorkItem]:
    """Every work item the ablation needs, its baseline dependency included."""
    s, ab = params.stimuli.set_name, params.ablations
    base = baseline_items(params, models)
    if ablation_id in ("A5", "A8"):
        return base
    if ablation_id == "A1":
        return base + [WorkItem("predictions", s, m, Condition(protocol="text_only",
                       label_source=ab.A1.label_source)) for m in models]
    if ablation_id == "A2":
        return base + [WorkItem("predictions", s, m, Condition(protocol="single_shot"))
                       for m in models]
    if ablation_id == "A3":
        return base + [WorkItem("predictions", s, m, Condition(temperature=t, repeat=r))
                       for m in models for t in ab.A3.temperatures
                       for r in range(1, ab.A3.repeats + 1)]
    if ablation_id == "A4":  # every arm's models (QAT release, self-quantized copy, FP16)
        models_a4 = dict.fromkeys(m for pair in ab.A4.arms().values() for m in pair)
        return [WorkItem("predictions", s, m, BASELINE) for m in models_a4]
    if ablation_id == "A9":
        return [WorkItem("hidden", s, ab.A9.model)]
    if ablation_id == "A6":
        return base + [WorkItem("predictions", s, m, BASELINE) for m in ab.A6.models]
    if ablation_id == "A7":
        return base + [WorkItem("predictions", params.real_faces.name, m, BASELINE)
                       for m in (*models, *params.models.fer)]
    raise KeyError(ablation_id)


@dataclass
class Plan:
    ablations: list[str]
    models: list[str]
    per_ablation: dict[str, list[WorkItem]] = field(default_factory=dict)
    unique: list[WorkItem] = field(default_factory=list)


def build_plan(params: Params, ablation_ids: Sequence[str], models: Sequence[str]) -> Plan:
    plan = Plan(list(ablation_ids), list(models))
    seen: dict[tuple, WorkItem] = {}
    for item in baseline_items(params, models):
        seen.setdefault(item.key, item)
    for a in ablation_ids:
        items = work_for(a, params, models)
        plan.per_ablation[a] = items
        for item in items:
            seen.setdefault(item.key, item)
    plan.unique = list(seen.values())
    return plan
