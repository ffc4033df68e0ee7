"""An experimental condition: what a model is asked, how, and which repeat.

Identity of work: two conditions that would send the same requests are the same work. A T = 0
condition is deterministic, so its repeats collapse to repeat 1 (:meth:`Condition.work`); T > 0
repeats are distinct (each gets its own seed).

A condition may need another condition's stored answers before it can be planned: text-only with
the model's own labels reads the model's context-carry, T = 0 answers (:attr:`Condition.labels_from`).
Code that orders work asks that property (or :attr:`WorkItem.depends_on
<emoface.ablations.base.WorkItem.depends_on>`), never the label source's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from emoface.backends.base import GenerationOptions
from emoface.prompts import PROMPT_VERSION, Protocol

if TYPE_CHECKING:  # config builds its ablations section from the registry, which needs this module
    from emoface.config import InferenceParams

#: where a text-only condition's labels come from: the model's own answers in the base condition
#: (context-carry, T = 0), or the images' intended emotions. The values are part of stored condition
#: ids (``text_only-baseline_t0_r1``) and of the rows' ``label_source`` column.
LabelSource = Literal["baseline", "intended"]


class Condition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Protocol = "context_carry"
    temperature: float = Field(0.0, ge=0.0, le=2.0, allow_inf_nan=False)
    repeat: int = Field(1, ge=1, le=100)  # as ablations.A3.repeats
    label_source: LabelSource | None = None
    # A3 with ``t0_repeats: distinct``: a T = 0 repeat re-run with its own seed (to measure the
    # server's non-determinism). Not part of the stored identity (excluded from model_dump), so
    # existing batch keys do not change; the repeat number in the condition id tells them apart.
    distinct_t0: bool = Field(False, exclude=True)

    @model_validator(mode="after")
    def _labels(self) -> Condition:
        if (self.protocol == "text_only") != (self.label_source is not None):
            raise ValueError("label_source is required for text_only and only for text_only")
        return self

    def work(self) -> Condition:
        """The canonical form of this condition's work (T = 0 repeats are one piece of work)."""
        if self.temperature == 0 and not self.distinct_t0:
            return self.model_copy(update={"repeat": 1})
        return self

    @property
    def condition_id(self) -> str:
        w = self.work()
        proto = w.protocol + (f"-{w.label_source}" if w.label_source else "")
        return f"{proto}_t{w.temperature:g}_r{w.repeat}"

    @property
    def labels_from(self) -> Condition | None:
        """The condition whose stored answers give this one its labels (the model's own
        context-carry, T = 0 answers), or None: it needs no other condition's answers."""
        return Condition() if self.label_source == "baseline" else None

    @property
    def prompt_version(self) -> str:
        return PROMPT_VERSION[self.protocol]

    def options(self, inference: InferenceParams, *, top_logprobs: int | None = None) -> GenerationOptions:
        w = self.work()
        return GenerationOptions(
            temperature=w.temperature,
            seed=inference.seed + (w.repeat - 1),
            max_tokens=inference.max_tokens,
            num_ctx=inference.num_ctx,
            top_logprobs=inference.top_logprobs if top_logprobs is None else top_logprobs,
        )
