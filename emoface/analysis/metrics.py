"""Core metrics of one model x condition, and identity-cluster bootstrap machinery.

Definitions used everywhere (one place, one name; docs/analysis-plan.md states them for readers):

* within-category SD — the mean over emotion categories of the per-category SD (ddof = 1) of a
  rating, over the images the model gave a usable rating. Three groupings (:data:`GROUPINGS`),
  always the same grouping and the same images for the model and for the human norms:

  - ``intended`` (primary; columns ``*_within_category_sd``): the stimulus's intended emotion;
  - ``correct`` (sensitivity; ``*_within_correct_sd``): only the images the model labels
    correctly, grouped by intended (= model) emotion;
  - ``label`` (sensitivity; ``*_within_label_sd``): the model's own usable label. A model whose
    rating follows its label gets an SD near 0 here almost by construction, so this grouping is
    never the primary figure.

  ``*_human_within_*`` columns are the human norms' per-image means over exactly those images and
  groups; ``*_human_rater_within_*`` columns are ONE human rater's within-category SD over the
  same images and groups (:func:`single_rater_within_category_sd`), the like-with-like reference
  of one model rating (a mean of many raters spreads less than one rater). Verdicts that depend
  on the within-category SD are computed under all three groupings; when they disagree the
  outcome is "definition-sensitive".
* kappa — Cohen's kappa of the square 6 x 6 table over rows with a usable in-set answer; other
  answers (out-of-set words, refusals, unparseable) are excluded and counted in ``n_excluded``.
  ``kappa7`` is the 7-column version over all rows: every non-usable answer is the category
  "other" (which no image intends). Accuracy counts non-usable answers as wrong (over all rows).
* SDs use ddof = 1. Pearson r CIs are Fisher-z (analytic, assuming independent images) and the
  ``*_boot_*`` columns are identity-cluster bootstrap intervals (images share identities), bias-
  corrected percentile (BC) intervals wherever a point estimate exists (their coverage of planted
  values is measured in bench/verdict_calibration.py, docs/verdict-calibration.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl

from emoface.analysis.stats import cohens_kappa, pearson_with_ci

USABLE = ("ok", "normalised")
FIELDS = ("valence", "arousal")
GROUPINGS = ("intended", "correct", "label")
# column suffix of each grouping's within-category SD
GROUPING_COLUMN = {"intended": "within_category_sd", "correct": "within_correct_sd",
                   "label": "within_label_sd"}


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
    """Weighted mean absolute error per bootstrap row."""
    return (w * np.abs(x - y)).sum(1) / w.sum(1)


def w_sd(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted SD (frequency weights, ddof = 1) per bootstrap row."""
    sw = w.sum(1, keepdims=True)
    m = (w * x).sum(1, keepdims=True) / sw
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((w * (x - m) ** 2).sum(1) / (sw[:, 0] - 1))


def w_within_category_sd(x: np.ndarray, category: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bootstrap mean over categories of the per-category SD (categories given per row)."""
    cats = np.unique(category)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a category with < 2 rows in a resample
        return np.nanmean(np.stack([w_sd(x[category == c], w[:, category == c]) for c in cats]),
                          axis=0)


def w_within_category_var(x: np.ndarray, category: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bootstrap mean over categories of the per-category variance (ddof = 1)."""
    cats = np.unique(category)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack([w_sd(x[category == c], w[:, category == c]) ** 2
                                    for c in cats]), axis=0)


def w_within_pearson(x: np.ndarray, y: np.ndarray, category: np.ndarray,
                     w: np.ndarray) -> np.ndarray:
    """Pooled within-category Pearson r per bootstrap row: x and y centred on their (weighted)
    category means, then correlated (the correlation that ignores between-category differences)."""
    xc = np.empty(w.shape)
    yc = np.empty(w.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in np.unique(category):
            m = category == c
            wm = w[:, m]
            sw = wm.sum(1, keepdims=True)
            safe = np.where(sw > 0, sw, 1.0)  # a category absent from a resample adds nothing
            xc[:, m] = x[m] - (wm * x[m]).sum(1, keepdims=True) / safe
            yc[:, m] = y[m] - (wm * y[m]).sum(1, keepdims=True) / safe
        cov = (w * xc * yc).sum(1)
        return cov / np.sqrt((w * xc**2).sum(1) * (w * yc**2).sum(1))


def within_pearson(x: np.ndarray, y: np.ndarray, category: np.ndarray) -> float:
    """Pooled within-category Pearson r (see :func:`w_within_pearson`)."""
    return float(w_within_pearson(np.asarray(x, float), np.asarray(y, float),
                                  np.asarray(category), np.ones((1, len(x))))[0])


def w_kappa(truth: np.ndarray, pred: np.ndarray, k: int, w: np.ndarray) -> np.ndarray:
    """Cohen's kappa per bootstrap row; truth/pred are label indices, -1 = excluded."""
    keep = pred >= 0
    t, p, ww = truth[keep], pred[keep], w[:, keep]
    total = ww.sum(1)
    po = (ww * (t == p)).sum(1) / total
    rows = np.stack([(ww * (t == i)).sum(1) for i in range(k)], 1) / total[:, None]
    cols = np.stack([(ww * (p == i)).sum(1) for i in range(k)], 1) / total[:, None]
    pe = (rows * cols).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
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


def grouped_sd(values: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups of the per-group SD (ddof = 1); groups with < 2 values are skipped."""
    values, groups = np.asarray(values, float), np.asarray(groups)
    sds = [np.std(values[groups == g], ddof=1) for g in np.unique(groups)
           if (groups == g).sum() > 1]
    return float(np.mean(sds)) if sds else float("nan")


def grouped_var(values: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups of the per-group variance (ddof = 1); groups with < 2 values skipped."""
    values, groups = np.asarray(values, float), np.asarray(groups)
    v = [np.var(values[groups == g], ddof=1) for g in np.unique(groups)
         if (groups == g).sum() > 1]
    return float(np.mean(v)) if v else float("nan")


def grouping(df: pl.DataFrame, grouping: str, rated: str | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept, category per kept row) of one within-category grouping (module docstring).

    ``rated``: a rating column; rows where it is null are dropped (model and humans are then
    compared over the same images)."""
    keep = np.ones(df.height, bool) if rated is None else df[rated].is_not_null().to_numpy()
    if grouping == "intended":
        cats = df["intended"].to_numpy()
    elif grouping in ("label", "correct"):
        labels = label_array(df)
        has = np.array([lab is not None for lab in labels])
        keep &= has
        if grouping == "correct":
            keep &= labels == df["intended"].to_numpy()
        cats = np.where(has, labels, "").astype(str)
    else:
        raise ValueError(f"unknown grouping {grouping!r} (one of {GROUPINGS})")
    return keep, np.asarray(cats)[keep].astype(str)


def within_category_sd(df: pl.DataFrame, dv: str, by: str = "intended",
                       rated: str | None = None) -> float:
    """Mean over categories of the per-category SD (ddof = 1) of ``dv`` under grouping ``by``
    (``intended`` | ``correct`` | ``label``), over rows where ``dv`` (and ``rated``, if given)
    is not null."""
    keep, cats = grouping(df, by, rated)
    x = df[dv].to_numpy().astype(float)[keep]
    ok = np.isfinite(x)
    return grouped_sd(x[ok], cats[ok])


def within_category_var(df: pl.DataFrame, dv: str, by: str = "intended") -> float:
    """Mean over categories of the per-category variance of ``dv`` (A4's variance ratio)."""
    keep, cats = grouping(df, by)
    x = df[dv].to_numpy().astype(float)[keep]
    ok = np.isfinite(x)
    return grouped_var(x[ok], cats[ok])


def label_array(df: pl.DataFrame) -> np.ndarray:
    """The model's usable label per row (object array, None where not usable)."""
    usable = df["emotion_status"].is_in(USABLE).to_numpy()
    return np.array([e if u else None for e, u in zip(df["emotion"].to_list(), usable,
                                                       strict=True)], dtype=object)


def w_grouped_sd(df: pl.DataFrame, x: np.ndarray, by: str, w: np.ndarray,
                 keep: np.ndarray | None = None, var: bool = False) -> np.ndarray:
    """Bootstrap within-category SD (or variance) of ``x`` (one value per row of ``df``) under
    grouping ``by``, over rows where x is finite (and ``keep``, e.g. the images both arms rated)."""
    rows, cats = grouping(df, by)
    ok = rows.copy()
    ok[rows] = np.isfinite(x[rows])
    if keep is not None:
        ok &= keep
    cats_all = np.full(df.height, "", dtype=object)
    cats_all[rows] = cats
    f = w_within_category_var if var else w_within_category_sd
    return f(x[ok], cats_all[ok].astype(str), w[:, ok])


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


def kappa7(df: pl.DataFrame, emotions: Sequence[str]) -> float:
    """Cohen's kappa over all rows with a 7th category "other" for every non-usable answer."""
    truth, pred = label_codes(df, emotions)
    k = len(emotions)
    table = np.zeros((k + 1, k + 1))
    np.add.at(table, (truth, np.where(pred >= 0, pred, k)), 1)
    return cohens_kappa(table)[0]


def core_metrics(df: pl.DataFrame, emotions: Sequence[str], *, alpha: float = 0.05,
                 n_boot: int = 2000, seed: int = 7) -> dict[str, float]:
    """Accuracy, kappa (+SE, CI, bootstrap CI), kappa7, and per rating field r (Fisher +
    bootstrap CI), MAE, SD, the within-category SD under each grouping for the model and for the
    humans over the same images, and the parse-failure rate."""
    truth, pred = label_codes(df, emotions)
    k = len(emotions)
    keep = pred >= 0
    table = np.zeros((k, k))
    np.add.at(table, (truth[keep], pred[keep]), 1)
    out: dict[str, float] = {"n": float(df.height), "accuracy": float(np.mean(truth == pred)),
                             "n_excluded": float((~keep).sum()), "kappa7": kappa7(df, emotions)}
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
            f"{f}_failed": float(1 - ok.mean()),
        })
        for g in GROUPINGS:
            col = GROUPING_COLUMN[g]
            out[f"{f}_{col}"] = within_category_sd(df, f, by=g)
            out[f"{f}_human_{col}"] = within_category_sd(df, f"{f}_mean", by=g, rated=f)
            # the like-with-like reference: one human rater (primary; the means: sensitivity)
            out[f"{f}_human_rater_{col}"] = single_rater_within_category_sd(df, f, by=g, rated=f)
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
    """The human norms' within-category SD (per-image means, intended emotion, all images); the
    per-model reference over the model's own rated images is in core_metrics' ``*_human_*``."""
    return {f: within_category_sd(df, f"{f}_mean", by="intended") for f in FIELDS}


def human_single_rater_within_category_sd(df: pl.DataFrame) -> dict[str, float]:
    """One human rater's within-category SD (intended emotion, all images; the norms' means, SDs
    and rater counts): the reference a single model rating is compared with."""
    return {f: single_rater_within_category_sd(df, f) for f in FIELDS}


# --- one human rater as the reference of one model rating (docs/analysis-plan.md) ------------

def rater_noise_variance(sd: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per image, the rater variance a single rater adds beyond the image's mean rating:
    ``(1 - 1/n) s^2`` (s = the norms' SD over the image's n raters, ddof = 1).

    The per-image mean already carries ``s^2 / n`` of rater noise, so one rater's variance inside
    a category is ``Var(means) + mean(s^2) - mean(s^2 / n)``; an image with one rater (n = 1)
    adds nothing (its "mean" is already one rater's answer). NaN where n or s is missing."""
    sd, n = np.asarray(sd, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 1, (1 - 1 / n) * sd**2, np.nan)


def w_single_rater_within_sd(means: np.ndarray, noise: np.ndarray, category: np.ndarray,
                             w: np.ndarray) -> np.ndarray:
    """Bootstrap within-category SD of ONE human rater: per category
    ``sqrt(Var_w(means) + weighted mean of noise)`` (noise from :func:`rater_noise_variance`),
    then the mean over categories (as :func:`w_within_category_sd`)."""
    cats = np.unique(category)
    if cats.size == 0:  # nothing rated (e.g. a classifier without valence/arousal)
        return np.full(w.shape[0], np.nan)
    out = []
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for c in cats:
            m = category == c
            wm = w[:, m]
            extra = (wm * noise[m]).sum(1) / wm.sum(1)
            out.append(np.sqrt(w_sd(means[m], wm) ** 2 + extra))
        return np.nanmean(np.stack(out), axis=0)


def w_grouped_single_rater_sd(df: pl.DataFrame, field: str, by: str, w: np.ndarray,
                              keep: np.ndarray | None = None) -> np.ndarray:
    """:func:`w_single_rater_within_sd` of rating ``field`` under grouping ``by`` over the rows of
    ``df`` with a finite mean and rater noise (and ``keep``), as :func:`w_grouped_sd`.

    ``df`` needs ``<field>_mean``, ``<field>_sd`` and ``n_raters`` (the norms); without the SD
    columns every value is NaN."""
    if f"{field}_sd" not in df.columns or "n_raters" not in df.columns:
        return np.full(w.shape[0], np.nan)
    rows, cats = grouping(df, by)
    h = df[f"{field}_mean"].to_numpy().astype(float)
    noise = rater_noise_variance(df[f"{field}_sd"].to_numpy().astype(float),
                                 df["n_raters"].to_numpy().astype(float))
    ok = rows.copy()
    ok[rows] = np.isfinite(h[rows]) & np.isfinite(noise[rows])
    if keep is not None:
        ok &= keep
    cats_all = np.full(df.height, "", dtype=object)
    cats_all[rows] = cats
    return w_single_rater_within_sd(h[ok], noise[ok], cats_all[ok].astype(str), w[:, ok])


def single_rater_within_category_sd(df: pl.DataFrame, field: str, by: str = "intended",
                                    rated: str | None = None) -> float:
    """One human rater's within-category SD of ``field`` under grouping ``by``, over the rows
    where ``rated`` (a model's rating column, if given) is not null."""
    keep = None if rated is None else df[rated].is_not_null().to_numpy()
    return float(w_grouped_single_rater_sd(df, field, by, np.ones((1, df.height)), keep)[0])



# --- signal: pooled within-category agreement with the human means ------------------------------

def w_within_moments(x: np.ndarray, y: np.ndarray, category: np.ndarray,
                     w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bootstrap row: (pooled within-category covariance sum, x sum of squares, y sum of
    squares), x and y centred on their weighted category means (a category absent from a
    resample adds nothing)."""
    cov = np.zeros(w.shape[0])
    sxx = np.zeros(w.shape[0])
    syy = np.zeros(w.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in np.unique(category):
            m = category == c
            wm = w[:, m]
            sw = wm.sum(1, keepdims=True)
            safe = np.where(sw > 0, sw, 1.0)
            xc = x[m] - (wm * x[m]).sum(1, keepdims=True) / safe
            yc = y[m] - (wm * y[m]).sum(1, keepdims=True) / safe
            cov += (wm * xc * yc).sum(1)
            sxx += (wm * xc**2).sum(1)
            syy += (wm * yc**2).sum(1)
    return cov, sxx, syy


def w_within_slope(x: np.ndarray, y: np.ndarray, category: np.ndarray,
                   w: np.ndarray) -> np.ndarray:
    """Pooled within-category least-squares slope of x on y per bootstrap row: the common slope
    of x on y with one intercept per category (sum of centred cross-products / sum of centred
    squares of y)."""
    cov, _, syy = w_within_moments(x, y, category, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / syy


def w_within_signal(x: np.ndarray, y: np.ndarray, category: np.ndarray,
                    w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pooled within-category Pearson r, pooled within-category slope of x on y) per row."""
    cov, sxx, syy = w_within_moments(x, y, category, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt(sxx * syy), cov / syy


def w_grouped_signal(df: pl.DataFrame, x: np.ndarray, field: str, by: str, w: np.ndarray,
                     keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`w_within_signal` of a model's rating ``x`` (one value per row of ``df``) with the
    human mean of ``field``, under grouping ``by``, over the rows where both are finite (and
    ``keep``)."""
    rows, cats = grouping(df, by)
    h = df[f"{field}_mean"].to_numpy().astype(float)
    ok = rows.copy()
    ok[rows] = np.isfinite(x[rows]) & np.isfinite(h[rows])
    if keep is not None:
        ok &= keep
    cats_all = np.full(df.height, "", dtype=object)
    cats_all[rows] = cats
    return w_within_signal(x[ok], h[ok], cats_all[ok].astype(str), w[:, ok])


def w_rater_slope(means: np.ndarray, noise_of_mean: np.ndarray, category: np.ndarray,
                  w: np.ndarray) -> np.ndarray:
    """Per bootstrap row: the pooled within-category slope that one INDEPENDENT human rater's
    rating has on the human means, i.e. the reliability of the means within category,
    ``1 - sum_c (1 - 1/W_c) sum_i w_i v_i / sum_c sum_i w_i (m_i - mbar_c)^2`` with ``v_i =
    s_i^2 / n_i`` (``noise_of_mean``: the rater noise each mean carries) and W_c the category's
    weight. A rater independent of the norms has the slope Var(mu) / Var(m) on them; a model
    whose rating is a human rater's has the same slope."""
    num = np.zeros(w.shape[0])
    den = np.zeros(w.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in np.unique(category):
            m = category == c
            wm = w[:, m]
            sw = wm.sum(1)
            safe = np.where(sw > 0, sw, 1.0)
            mc = means[m] - (wm * means[m]).sum(1, keepdims=True) / safe[:, None]
            den += (wm * mc**2).sum(1)
            num += np.where(sw > 0, (1 - 1 / safe), 0.0) * (wm * noise_of_mean[m]).sum(1)
        return 1 - num / den


# --- spreads on a bounded 1-9 scale ----------------------------------------------------------

def relative_sd(sd: np.ndarray, mean: np.ndarray, low: float = 1.0, high: float = 9.0,
                n: np.ndarray | None = None) -> np.ndarray:
    """An SD relative to the largest SD possible at that mean on [low, high].

    Bhatia & Davis (2000): a distribution on [low, high] with mean mu has variance at most
    (mu - low)(high - mu) (all mass on the two ends). A sample SD (ddof 1) over n values is at
    most sqrt(n / (n - 1)) times that (give ``n``; NaN where n < 2: one value has no spread).
    NaN where the mean sits on a bound (no spread is possible there)."""
    sd, mean = np.asarray(sd, float), np.asarray(mean, float)
    bound = (mean - low) * (high - mean)
    if n is not None:
        n = np.asarray(n, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            bound = np.where(n >= 2, bound * n / (n - 1), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bound > 0, sd / np.sqrt(np.where(bound > 0, bound, 1.0)), np.nan)


def w_partial_r(x: np.ndarray, y: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Partial Pearson r of x and y given the columns of ``z`` (include an intercept or category
    dummies), per bootstrap row of frequency weights ``w``: the r of the weighted least-squares
    residuals of x and of y on z."""
    z = np.asarray(z, float)
    zz = np.einsum("bn,ni,nj->bij", w, z, z)
    out = []
    for v in (x, y):
        zv = (w * v) @ z  # (B, p)
        coef = (np.linalg.pinv(zz) @ zv[..., None])[..., 0]  # a column absent in a resample
        out.append(v[None, :] - coef @ z.T)
    rx, ry = out
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * rx * ry).sum(1) / np.sqrt((w * rx**2).sum(1) * (w * ry**2).sum(1))
