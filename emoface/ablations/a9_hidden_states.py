"""A9: hidden states. Per-layer hidden states of one model (``ablations.A9.model``).

The question: does the representation hold within-category information about the human ratings?

Preprocessing (docs/analysis-plan.md, A9): human ratings Y = (valence mean, arousal mean) per
image, each z-scored over the images; hidden states H per layer and pooling (mean over image
tokens, last token), float64, each feature centred over the images (no scaling).

* Debiased linear CKA(H, Y) (Kornblith et al. 2019) with a free label-permutation null.
* Within-category debiased CKA: the mean over emotions of CKA inside each emotion, with a null
  that permutes images within emotion and respects identity (identity blocks: one permutation of
  the identities applied to every emotion; images of one emotion never move to another).
* RSA (image pooling): RDM(H) = correlation distance, RDM(Y) = Euclidean distance, condensed
  upper triangles; Spearman r and rho-a (Schuett et al. 2023) of the two; the same
  identity-respecting within-emotion null (rows and columns permuted together).
* Family-wise: every p is a max-statistic permutation p over the 2 x L layer-pooling combinations
  (RSA: the L image-pooling layers), i.e. each permutation's largest statistic over the family is
  the null for every member, which controls the family-wise error at alpha.

Decision: supports when the best combination's within-category CKA and its global CKA both have a
family-wise p < alpha; otherwise cannot tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emoface.ablations.base import Ablation, Headline, WorkItem
from emoface.ablations.report_spec import Col, Decision, Estimate, ReportSpec, View, num
from emoface.config import ModelId, _Frozen

if TYPE_CHECKING:

    from emoface.analysis.common import AblationResult
    from emoface.analysis.context import AnalysisContext
    from emoface.config import Params


class A9Params(_Frozen):
    """``ablations.A9``: the model whose hidden states are read."""

    model: ModelId = "simulated/gemma3-4b"


def work(params: Params, models: Sequence[str]) -> list[WorkItem]:
    return [WorkItem("hidden", params.stimuli.set_name, params.ablations.A9.model)]


POOLINGS = ("image_pool", "last_token")


@dataclass
class _RatingRDM:
    """The rating RDM (Euclidean), condensed and ranked once."""

    ranks: np.ndarray
    square_ranks: np.ndarray
    iu: tuple

    @classmethod
    def of(cls, y: np.ndarray) -> _RatingRDM:
        from scipy import stats
        from scipy.spatial.distance import pdist, squareform

        iu = np.triu_indices(y.shape[0], k=1)
        ranks = stats.rankdata(pdist(y, "euclidean"))
        return cls(ranks, squareform(ranks), iu)


def within_identity_perms(cats: np.ndarray, identities: np.ndarray, n_perm: int,
                          rng: np.random.Generator) -> np.ndarray:
    """(n_perm, n) permutations that keep every image inside its category and, when every
    identity has exactly one image per category, move whole identities (one permutation of the
    identities for all categories); otherwise images are permuted freely within category."""
    n = len(cats)
    ids, cs = np.unique(identities), np.unique(cats)
    index = {(i, c): k for k, (i, c) in enumerate(zip(identities, cats, strict=True))}
    if len(index) == n == len(ids) * len(cs):
        id_pos = {i: j for j, i in enumerate(ids)}
        out = np.empty((n_perm, n), dtype=np.int64)
        lookup = np.empty((len(ids), len(cs)), dtype=np.int64)
        for (i, c), k in index.items():
            lookup[id_pos[i], np.searchsorted(cs, c)] = k
        row_id = np.array([id_pos[i] for i in identities])
        row_c = np.searchsorted(cs, cats)
        for b in range(n_perm):
            p = rng.permutation(len(ids))
            out[b] = lookup[p[row_id], row_c]
        return out
    out = np.tile(np.arange(n), (n_perm, 1))
    for c in cs:
        where = np.where(cats == c)[0]
        out[:, where] = where[np.argsort(rng.random((n_perm, where.size)), axis=1)]
    return out


def _rsa_stats(h: np.ndarray, rdm: _RatingRDM, perms: np.ndarray) -> tuple[dict, np.ndarray]:
    """Spearman and rho-a of RDM(h) with the rating RDM, and the Spearman permutation values."""
    from scipy import stats
    from scipy.spatial.distance import pdist

    from emoface.analysis.stats import (
        rho_a_ranked,
    )

    dh = stats.rankdata(pdist(h, "correlation"))
    obs = {"rsa_spearman": float(np.corrcoef(dh, rdm.ranks)[0, 1]),
           "rsa_rho_a": rho_a_ranked(dh, rdm.ranks)}
    null = np.array([np.corrcoef(dh, rdm.square_ranks[np.ix_(p, p)][rdm.iu])[0, 1]
                     for p in perms])
    return obs, null


def analysis(ctx: AnalysisContext) -> AblationResult:
    """A9 for the configured model (family-wise permutation p over layers x poolings)."""
    import polars as pl

    from emoface.analysis import common as C
    from emoface.analysis.common import AblationResult, fmt, word
    from emoface.analysis.stats import (
        debiased_cka,
        debiased_cka_permutations,
        linear_cka,
        pearson_with_ci,
        permutation_p,
    )

    model = ctx.params.ablations.A9.model
    layers = ctx.hidden_layers(model)
    design = ctx.design()
    order = {s: i for i, s in enumerate(design["stimulus_id"])}
    d = design[np.array([order[s] for s in layers[0]["stimulus_id"]])]
    y = d.select("valence_mean", "arousal_mean").to_numpy().astype(float)
    y = (y - y.mean(0)) / y.std(0)
    cats = d["intended"].to_numpy().astype(str)
    rng = np.random.default_rng(ctx.a.seed)
    n_perm = ctx.a.permutations
    free = np.stack([rng.permutation(len(y)) for _ in range(n_perm)])
    within = within_identity_perms(cats, d["identity"].to_numpy().astype(str), n_perm, rng)
    n_rsa = max(99, n_perm // 5)  # an RSA permutation costs O(n^2)
    rdm = _RatingRDM.of(y)
    ucats = np.unique(cats)
    rows, null_g, null_w, null_r = [], [], [], []
    for li, layer in enumerate(layers):
        for pool in POOLINGS:
            h = layer[pool].astype(np.float64)
            h = h - h.mean(0)
            dcka = debiased_cka(h, y)
            null_g.append(debiased_cka_permutations(h, y, free))
            wc, wnull = 0.0, np.zeros(n_perm)
            for c in ucats:
                m = cats == c
                where = np.where(m)[0]
                local = np.searchsorted(where, within[:, m])  # positions inside the category
                wc += debiased_cka(h[m], y[m]) / len(ucats)
                wnull += debiased_cka_permutations(h[m], y[m], local) / len(ucats)
            null_w.append(wnull)
            row = {"layer": li, "pooling": pool, "linear_cka": linear_cka(h, y),
                   "debiased_cka": dcka, "debiased_cka_p_raw": permutation_p(dcka, null_g[-1]),
                   "within_category_debiased_cka": float(wc),
                   "within_category_p_raw": permutation_p(wc, wnull),
                   "rsa_spearman": np.nan, "rsa_rho_a": np.nan, "rsa_p_raw": np.nan}
            if pool == "image_pool":
                obs, rnull = _rsa_stats(h, rdm, within[:n_rsa])
                null_r.append(rnull)
                row.update(obs, rsa_p_raw=permutation_p(obs["rsa_spearman"], rnull))
            rows.append(row)
    max_g, max_w = np.max(null_g, axis=0), np.max(null_w, axis=0)
    max_r = np.max(null_r, axis=0)
    for r in rows:
        r["debiased_cka_p"] = permutation_p(r["debiased_cka"], max_g)
        r["debiased_cka_null95_fwe"] = float(np.quantile(max_g, 0.95))
        r["within_category_p"] = permutation_p(r["within_category_debiased_cka"], max_w)
        r["within_category_null95_fwe"] = float(np.quantile(max_w, 0.95))
        r["rsa_p"] = permutation_p(r["rsa_spearman"], max_r) \
            if np.isfinite(r["rsa_spearman"]) else np.nan
    table = pl.DataFrame(rows)
    best = table.sort("within_category_debiased_cka", descending=True).row(0, named=True)
    base = ctx.predictions(model)
    out_within = np.nanmean([pearson_with_ci(g["arousal"].drop_nulls().to_numpy(),
                                             g.drop_nulls("arousal")["arousal_mean"].to_numpy())[0]
                             for _, g in base.group_by("intended", maintain_order=True)])
    sig = best["within_category_p"] < ctx.a.alpha and best["debiased_cka_p"] < ctx.a.alpha
    o = C.SUPPORTS if sig else C.CANNOT_TELL
    best_rsa = table.filter(pl.col("pooling") == "image_pool").sort(
        "rsa_spearman", descending=True).row(0, named=True)
    verdict = (f"A9 (rule: within-category debiased CKA and debiased CKA above their permutation "
               f"nulls, family-wise over {table.height} layer x pooling combinations (max-"
               f"statistic) => information in the representation, not the output): {model}, best "
               f"layer {best['layer']} ({best['pooling']}): within-category debiased CKA "
               f"{fmt(best['within_category_debiased_cka'], 3)} (identity-respecting within-"
               f"emotion null, FWE 95 % {fmt(best['within_category_null95_fwe'], 3)}, FWE p = "
               f"{fmt(best['within_category_p'], 4)}), debiased CKA "
               f"{fmt(best['debiased_cka'], 3)} (FWE p = {fmt(best['debiased_cka_p'], 4)}); RSA "
               f"best layer {best_rsa['layer']}: Spearman {fmt(best_rsa['rsa_spearman'], 3)}, "
               f"rho-a {fmt(best_rsa['rsa_rho_a'], 3)} (FWE p = {fmt(best_rsa['rsa_p'], 4)}, "
               f"{n_rsa} permutations); the output's mean within-category r with human arousal "
               f"{fmt(out_within)} -> {word(o)}")
    return AblationResult(
        "A9", verdict, o, tables={"main": table},
        plots={"cka_rsa_by_layer": table.select("layer", "pooling", "linear_cka", "debiased_cka",
                                                "within_category_debiased_cka", "rsa_spearman")},
        metrics={"model": model, "best_layer": best, "output_within_category_r": out_within,
                 "rows": table.to_dicts(), "family": f"{table.height} layer x pooling",
                 "adjustment": "max-statistic permutation p",
                 "rsa_permutations": n_rsa},
        simulated=bool(base["simulated"].any()), provenance=C.provenance([base]))


def figures(result: AblationResult, folder: Path) -> list[Path]:
    import polars as pl

    from emoface.analysis.figures import new_figure, save

    d = result.tables["main"]
    fig, axes = new_figure("A9: hidden states vs human ratings by layer (grey: family-wise 95 % "
                           "permutation null)", result.simulated, 3, width=4.2)
    for ax, (key, null, what) in zip(axes[:2], (
            ("debiased_cka", "debiased_cka_null95_fwe", "debiased CKA"),
            ("within_category_debiased_cka", "within_category_null95_fwe",
             "within-category debiased CKA")), strict=True):
        for i, pool in enumerate(("image_pool", "last_token")):
            sub = d.filter(pl.col("pooling") == pool).sort("layer")
            ax.plot(sub["layer"], sub[key], marker="o", color=f"C{i}", label=pool)
        ax.axhline(float(d[null][0]), color="grey", ls="--", lw=1, label="null, 95 % (FWE)")
        ax.set(xlabel="decoder layer", ylabel=what, title=what)
        ax.legend(fontsize=6)
    sub = d.filter(pl.col("pooling") == "image_pool").sort("layer")
    axes[2].plot(sub["layer"], sub["rsa_spearman"], marker="s", color="C2", label="image_pool")
    axes[2].axhline(0, color="grey", lw=.8)
    axes[2].set(xlabel="decoder layer", ylabel="Spearman r of the RDMs", title="RSA")
    axes[2].legend(fontsize=6)
    for ax in axes:
        ax.title.set_fontsize(8)
    return [save(fig, folder / "cka_rsa_by_layer.png")]


def decisions(tables, metrics: dict, alpha: float) -> list[Decision]:
    """The best layer's within-category debiased CKA, with both family-wise ps."""
    best = tables("main").sort("within_category_debiased_cka", descending=True).row(0, named=True)
    return [Decision(
        f"{metrics.get('model', '')}, layer {best['layer']} ({best['pooling']})",
        "within-category debiased CKA with the human ratings (best layer); p family-wise over "
        "layers x poolings (max-statistic permutation)",
        [Estimate("", best["within_category_debiased_cka"])],
        [("within", num(best["within_category_p"])), ("global", num(best["debiased_cka_p"]))],
        metrics["outcome"])]


REPORT = ReportSpec(
    "Do hidden states hold within-category information about human ratings?", decisions, None,
    (View("main", (
        Col("layer", "layer", kind="int"), Col("pooling", "pooling", kind="text"),
        Col("linear CKA", "linear_cka"), Col("debiased CKA", "debiased_cka"),
        Col("p (FWE)", "debiased_cka_p"),
        Col("within-category CKA", "within_category_debiased_cka"),
        Col("p (FWE)", "within_category_p"), Col("RSA Spearman", "rsa_spearman"),
        Col("RSA ρ-a", "rsa_rho_a"), Col("RSA p (FWE)", "rsa_p"))),))


ABLATION = Ablation(
    id="A9", name="hidden states", priority=3, tiers=("complete", "extended"),
    paper_section="representation vs output",
    headline=Headline("main", "debiased_cka", None, None, "debiased_cka_p", pick="max"),  # DVC metrics
    hypothesis="The representation holds within-category information the output lacks.",
    interpretation="CKA/RSA with the human ratings above the permutation null, within categories "
                   "=> information in the representation, not in the output.",
    planned_hours=4.0, needs="hidden states of Gemma3 per layer",
    work=work, analysis=analysis, figures=figures, params=A9Params, report=REPORT,
    analysis_seconds=48.0,  # CPU s on the embedded set (emoface/planning.py)
)
