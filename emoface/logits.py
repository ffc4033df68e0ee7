"""From generated-token log-probabilities to the 9-digit rating distribution (dark knowledge, A5).

The *rating step* of a turn is the first generated token whose text, stripped of whitespace, is a
digit 1-9 (or starts with one). At that step the digit log-probabilities are either the backend's
exact full-vocabulary values (mlx, simulated) or are read from its top-k list (Ollama, k <= 20):
variants of one digit ("7", " 7", "▁7") are merged by log-sum-exp; a digit absent from the top-k is
recorded as missing (NaN), never as zero. ``digit_mass`` is the probability the digits held before
renormalising (a sum over what is known: a lower bound when digits are missing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emoface.backends.base import TokenStep

DIGITS = tuple(str(k) for k in range(1, 10))


def _digit_of(token: str) -> str | None:
    t = token.replace("▁", " ").replace("Ġ", " ").strip()
    return t if t in DIGITS else None


def rating_step(steps: Sequence[TokenStep]) -> int | None:
    """Index of the first generated token that is a digit 1-9 (or begins with one)."""
    for i, s in enumerate(steps):
        t = s.token.replace("▁", " ").replace("Ġ", " ").strip()
        if t[:1] in DIGITS:
            return i
    return None


def merge_digit_logprobs(top: Sequence[tuple[int, str, float]]) -> np.ndarray:
    """Log-probabilities of digits 1..9 from a top-k list, variants merged; NaN when absent."""
    buckets: dict[str, list[float]] = {d: [] for d in DIGITS}
    for _, text, lp in top:
        d = _digit_of(text)
        if d is not None:
            buckets[d].append(float(lp))
    return np.array(
        [_logsumexp(v) if v else np.nan for v in (buckets[d] for d in DIGITS)], dtype=np.float64
    )


def _logsumexp(v) -> float:
    # numpy's log-sum-exp of a short vector (scipy.special.logsumexp costs ~0.3 ms a call, and
    # the simulated rater makes two calls per answer)
    return float(np.logaddexp.reduce(np.asarray(v, dtype=np.float64)))


@dataclass(frozen=True)
class DigitDistribution:
    logprobs: np.ndarray  # (9,) float64, NaN where unknown
    source: str  # "exact" or "topk"

    @property
    def mass(self) -> float:
        known = self.logprobs[~np.isnan(self.logprobs)]
        return float(np.exp(_logsumexp(known))) if known.size else 0.0

    @property
    def n_missing(self) -> int:
        return int(np.isnan(self.logprobs).sum())


def digit_distribution(step: TokenStep) -> DigitDistribution:
    if step.digit_logprobs is not None:
        return DigitDistribution(np.asarray(step.digit_logprobs, dtype=np.float64), "exact")
    return DigitDistribution(merge_digit_logprobs(step.top), "topk")
