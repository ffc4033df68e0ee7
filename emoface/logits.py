"""From generated-token log-probabilities to the 9-digit rating distribution (dark knowledge, A5).

The *rating step* of a turn is the first generated token whose text, stripped of whitespace, is a
digit 1-9 (or starts with one). At that step the digit log-probabilities are either the backend's
exact full-vocabulary values (mlx, simulated) or are read from its top-k list (Ollama, k <= 20):
variants of one digit ("7", " 7", "▁7") are merged by log-sum-exp; a digit absent from the top-k is
recorded as missing (NaN), never as zero. ``digit_mass`` is the probability the digits held before
renormalising (a sum over what is known: a lower bound when digits are missing).

Stored digit log-probabilities are *exact* (:func:`exact_logprobs`): each is the float64 log of a
float64 probability that ``np.exp`` gives back bit for bit, so answers written out as probabilities
(``emoface results export``, a lab's files) come back in through :func:`logprobs_of` as the same
numbers, and every analysis of them repeats to the last bit.
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


_MAX_STEPS = 64  # log and exp are within an ulp or two: a handful of steps always suffices


def _step_to_preimage(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step each y (float64 neighbour by neighbour) towards the floats whose ``np.exp`` is exactly
    p; (the first one reached, whether one was): none when exp steps over p (p is no float64
    exp) or p, y are not finite."""
    y = y.copy()
    with np.errstate(over="ignore"):
        e = np.exp(y)
    found = np.isfinite(y) & (e == p)
    todo = np.isfinite(y) & np.isfinite(p) & ~found
    up = e < p
    for _ in range(_MAX_STEPS):
        if not todo.any():
            break
        y[todo] = np.nextafter(y[todo], np.where(up[todo], np.inf, -np.inf))
        with np.errstate(over="ignore"):
            e = np.exp(y)
        hit = todo & (e == p)
        found |= hit
        todo &= ~hit & ((e < p) == up)  # stepped over p: it has no exact preimage
    return y, found


def logprobs_of(probabilities: np.ndarray) -> np.ndarray:
    """Float64 log-probabilities of probabilities, chosen so that ``np.exp`` gives the
    probability back exactly: of the floats x with exp(x) == p (several when |x| < 1, where exp
    is many-to-one), the one nearest log(p); so a probability written as ``exp(x)`` of an exact
    log-probability x (:func:`exact_logprobs`) comes back as x itself. A probability that is no
    float64 exp(x) gets the exact log-probability of exp(log(p)). 0 -> -inf, NaN stays NaN."""
    p = np.asarray(probabilities, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        y0 = np.log(p)
    y, ok = _step_to_preimage(p, y0)
    miss = np.isfinite(y0) & ~ok
    if miss.any():  # exp(log(p)) is a float64 exp(x) (of log(p) itself): its nearest preimage
        q = np.exp(y0[miss])
        with np.errstate(divide="ignore"):
            y2, ok2 = _step_to_preimage(q, np.log(q))
        y[miss] = np.where(ok2, y2, y0[miss])
    return np.where(np.isfinite(y0), y, y0)


def exact_logprobs(logprobs: np.ndarray) -> np.ndarray:
    """The stored form of log-probabilities: :func:`logprobs_of` of their float64
    probabilities. Idempotent; a value changes (by an ulp or so) only where exp is many-to-one
    (|x| < 1) and another float with the same probability lies nearer log(exp(x))."""
    x = np.asarray(logprobs, np.float64)
    with np.errstate(over="ignore"):
        return logprobs_of(np.exp(x))


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
    logprobs: np.ndarray  # (9,) float64, NaN where unknown; stored exact (exact_logprobs)
    source: str  # "exact" or "topk"

    def __post_init__(self) -> None:
        object.__setattr__(self, "logprobs", exact_logprobs(self.logprobs))

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
