"""Core metrics of one model x condition, and identity-cluster bootstrap machinery.

Definitions used everywhere (one place, one name):

* ``within_category_sd`` — the mean over emotion categories of the per-category SD (ddof = 1) of
  a model's rating, the category being **the model's own label** for that image (the "nearly fixed
  value per category" the study reports is a value per label; grouping by the intended emotion
  would mix misclassified images, anchored to other labels, into each category and measure
  confusion instead). Only rows with a usable in-set label and rating count.
  ``within_intended_sd`` is the same grouped by the intended emotion (secondary). Human norms have
  no labels: their within-category SD groups per-image means by intended emotion.
* kappa rule for answers outside the emotion set — Cohen's kappa uses the square table of the six
  emotions over rows with a usable answer (``ok``/``normalised`` in the set); other answers
  (out-of-set words, refusals, unparseable) are excluded from kappa and counted in ``n_excluded``;
  accuracy counts them as wrong (over all rows).
* SDs use ddof = 1. Pearson r CIs are Fisher-z (analytic, assuming independent images) and the
  ``*_boot_*`` columns are identity-cluster bootstrap intervals (images share identities), bias-
  corrected percentile (BC) intervals wherever a point estimate exists: with plain percentiles,
  planted effects were covered 8/10 times at a nominal 95 % (tests/analysis/test_recovery.py
  and the closing note of the analysis issue), with BC 10/10.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from emoface.analysis.stats import cohens_kappa, pearson_with_ci

USABLE = ("ok", "normalised")
FIELDS = ("valence", "arousal")


def cluster_weights(clusters: Sequence[str], n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_rows) frequency weights of an identity-cluster bootstrap."""
    codes, idx = np.unique(np.asarray(clusters), return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(codes), np.full(len(codes), 1 / len(codes)), size=n_boot)
    return counts[:, idx].astype(np.float64)


def w_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson r per bootstrap row (NaN where undefined, e.g. no rated rows)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sw = w.sum(axis=1, keepdims=True)
        mx, my = (w * x).sum(1, keepdims=True) / sw, (w * y).sum(1, keepdims=True) / sw
        cov = (w * (x - mx) * (y - my)).sum(1)
        vx, vy = (w * (x - mx) ** 2).sum(1), (w * (y - my) ** 2).sum(1)
        return cov / np.sqrt(vx * vy)


def w_mae(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w * np.abs(x - y)).sum(1) / w.sum(1)


def w_sd(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = w.sum(1, keepdims=True)
    m = (w * x).sum(1, keepdims=True) / sw
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((w * (x - m) ** 2).sum(1) / (sw[:, 0] - 1))


def w_within_category_sd(x: np.ndarray, category: np.ndarray, w: np.ndarray) -> np.ndarray:
    cats = np.unique(category)
    return np.nanmean(np.stack([w_sd(x[category == c], w[:, category == c]) for c in cats]), axis=0)


def w_kappa(truth: np.ndarray, pred: np.ndarray, k: int, w: np.ndarray) -> np.ndarray:
    """Cohen's kappa per bootstrap row; truth/pred are label indices, -1 = excluded."""
    keep = pred >= 0
    t, p, ww = truth[keep], pred[keep], w[:, keep]
    total = ww.sum(1)
    po = (ww * (t == p)).sum(1) / total
    rows = np.stack([(ww * (t == i)).sum(1) for i in range(k)], 1) / total[:, None]
    cols = np.stack([(ww * (p == i)).sum(1) for i in range(k)], 1) / total[:, None]
    pe = (rows * cols).sum(1)
    return (po - pe) / (1 - pe)


def percentile_ci(samples: np.ndarray, alpha: float,
                  estimate: float | None = None) -> tuple[float, float]:
    """Bootstrap percentile CI; with the point ``estimate``, the bias-corrected (BC) percentile
    interval (Efron 1981): percentiles shifted by z0 = Phi^-1(share of samples < estimate)."""
    from scipy.stats import norm

    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return float("nan"), float("nan")
    lo_q, hi_q = alpha / 2, 1 - alpha / 2
    if estimate is not None and np.isfinite(estimate) and s.min() < estimate < s.max():
        z0 = norm.ppf(np.mean(s < estimate))
        za = norm.ppf(alpha / 2)
        lo_q, hi_q = norm.cdf(2 * z0 + za), norm.cdf(2 * z0 - za)
    return float(np.quantile(s, lo_q)), float(np.quantile(s, hi_q))


def within_category_sd(df: pl.DataFrame, dv: str, by: str = "emotion") -> float:
    """Mean over categories of the per-category SD (ddof = 1) of ``dv`` (see module docstring).

    ``by="emotion"`` (default) groups by the model's own usable label; ``by="intended"`` by design.
    """
    d = df.drop_nulls(dv)
    if by == "emotion" and "emotion_status" in d.columns:
        d = d.filter(pl.col("emotion_status").is_in(USABLE)).drop_nulls("emotion")
    sds = d.group_by(by, maintain_order=True).agg(pl.col(dv).std(ddof=1))[dv].drop_nulls()
    return float(sds.mean()) if sds.len() else float("nan")


def label_array(df: pl.DataFrame) -> np.ndarray:
    """The model's usable label per row (object array, None where not usable)."""
    usable = df["emotion_status"].is_in(USABLE).to_numpy()
    return np.array([e if u else None for e, u in zip(df["emotion"].to_list(), usable,
                                                       strict=True)], dtype=object)


def w_label_sd(x: np.ndarray, labels: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bootstrap within_category_sd by the model's label (rows with a label and a rating)."""
    ok = np.isfinite(x) & np.array([lab is not None for lab in labels])
    return w_within_category_sd(x[ok], labels[ok].astype(str), w[:, ok])


def label_codes(df: pl.DataFrame, emotions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Intended and predicted label indices; -1 where the answer is not a usable in-set label."""
    index = {e: i for i, e in enumerate(emotions)}
    truth = np.array([index[e] for e in df["intended"]])
    usable = df["emotion_status"].is_in(USABLE).to_numpy()
    pred = np.array([index.get(e, -1) if u and e is not None else -1
                     for e, u in zip(df["emotion"].to_list(), usable, strict=True)])
    return truth, pred


def confusion(df: pl.DataFrame, emotions: Sequence[str]) -> pl.DataFrame:
    """Square confusion table (rows intended, columns answered) plus an ``other`` column."""
    truth, pred = label_codes(df, emotions)
    k = len(emotions)
    table = np.zeros((k, k + 1), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        table[t, p if p >= 0 else k] += 1
    return pl.DataFrame({"intended": list(emotions),
                         **{e: table[:, i] for i, e in enumerate(emotions)},
                         "other": table[:, k]})


def core_metrics(df: pl.DataFrame, emotions: Sequence[str], *, alpha: float = 0.05,
                 n_boot: int = 2000, seed: int = 7) -> dict[str, float]:
    """Accuracy, kappa (+SE, CI, bootstrap CI), and per rating field r (Fisher + bootstrap CI),
    MAE, SD, within_category_sd, within_label_sd and the parse-failure rate."""
    truth, pred = label_codes(df, emotions)
    k = len(emotions)
    keep = pred >= 0
    table = np.zeros((k, k))
    np.add.at(table, (truth[keep], pred[keep]), 1)
    out: dict[str, float] = {"n": float(df.height), "accuracy": float(np.mean(truth == pred)),
                             "n_excluded": float((~keep).sum())}
    kap, se, lo, hi = cohens_kappa(table, alpha) if keep.sum() else (np.nan,) * 4
    w = cluster_weights(df["identity"].to_list(), n_boot, seed)
    blo, bhi = percentile_ci(w_kappa(truth, pred, k, w), alpha, kap) if keep.sum() \
        else (np.nan,) * 2
    out.update(kappa=kap, kappa_se=se, kappa_low=lo, kappa_high=hi, kappa_boot_low=blo,
               kappa_boot_high=bhi,
               emotion_failed=float((~df["emotion_status"].is_in(USABLE)).mean()))
    for f in FIELDS:
        ok = df[f].is_not_null().to_numpy()
        x = df[f].to_numpy()[ok].astype(float)
        h = df[f"{f}_mean"].to_numpy()[ok].astype(float)
        r, rlo, rhi = pearson_with_ci(x, h, alpha)
        br_lo, br_hi = percentile_ci(w_pearson(x, h, w[:, ok]), alpha, r)
        out.update({
            f"{f}_r": r, f"{f}_r_low": rlo, f"{f}_r_high": rhi,
            f"{f}_r_boot_low": br_lo, f"{f}_r_boot_high": br_hi,
            f"{f}_mae": float(np.mean(np.abs(x - h))) if x.size else float("nan"),
            f"{f}_sd": float(np.std(x, ddof=1)) if x.size > 1 else float("nan"),
            f"{f}_within_category_sd": within_category_sd(df, f),
            f"{f}_within_intended_sd": within_category_sd(df, f, by="intended"),
            f"{f}_failed": float(1 - ok.mean()),
        })
    return out


def metrics_table(frames: dict[tuple[str, str], pl.DataFrame], emotions: Sequence[str], *,
                  alpha: float, n_boot: int, seed: int) -> pl.DataFrame:
    """Core metrics for several (model_id, condition_id) tables, one row each."""
    rows = []
    for (model, cond), df in frames.items():
        rows.append({"model_id": model, "condition_id": cond,
                     "simulated": bool(df["simulated"].all()),
                     **core_metrics(df, emotions, alpha=alpha, n_boot=n_boot, seed=seed)})
    return pl.DataFrame(rows)


def human_within_category_sd(df: pl.DataFrame) -> dict[str, float]:
    """The human norms' within-category SD (per-image means), the reference for collapse."""
    return {f: within_category_sd(df, f"{f}_mean", by="intended") for f in FIELDS}
