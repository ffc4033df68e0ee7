"""Figures a reader would rather look at than read (matplotlib, PNG, no global pyplot state).

Every figure made from simulated data says so in its title. PNGs are written without the
"Software" metadata so identical data give identical bytes (DVC can tell nothing changed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from emoface.analysis.ablations import AblationResult
from emoface.io import atomic_path

SIM_NOTE = "SIMULATED: describes the simulator, not a real model"


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    return path


def _new(title: str, simulated: bool, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(5.2 * ncols, 3.8))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    fig.suptitle(title + (f"\n{SIM_NOTE}" if simulated else ""), fontsize=8,
                 color="black")
    return fig, list(axes)


def _errorbars(ax, labels, values, low, high, color="C0") -> None:
    x = np.arange(len(labels))
    v, lo, hi = (np.asarray(a, float) for a in (values, low, high))
    # a bias-corrected interval need not contain the point estimate (degenerate samples): no
    # negative bar lengths
    ax.errorbar(x, v, yerr=[np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)], fmt="o",
                color=color, capsize=4)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)


def figures_for(result: AblationResult, folder: Path) -> list[Path]:
    """Write the figure(s) of one result into ``folder``; returns the paths."""
    sim, rid, out = result.simulated, result.ablation_id, []
    t = result.tables
    if rid == "baseline":
        m = t["main"]
        fig, (ax,) = _new("Within-category SD by model (arousal, valence)", sim)
        x = np.arange(m.height)
        ax.bar(x - 0.2, m["arousal_within_category_sd"], 0.4, label="arousal")
        ax.bar(x + 0.2, m["valence_within_category_sd"], 0.4, label="valence")
        human = result.metrics["human_within_category_sd"]
        ax.axhline(human["arousal"], color="C0", ls="--", lw=1, label="humans (arousal)")
        ax.axhline(human["valence"], color="C1", ls="--", lw=1, label="humans (valence)")
        ax.set_xticks(x, m["model_id"], rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("mean SD within a category")
        ax.legend(fontsize=7)
        out.append(_save(fig, folder / "within_category_sd.png"))
    elif rid == "A1":
        s = result.plots["scatter"]
        models = s["model_id"].unique(maintain_order=True).to_list()
        fig, axes = _new("A1: arousal with image+label vs label only", sim, len(models))
        rng = np.random.default_rng(0)
        for ax, model in zip(axes, models, strict=True):
            d = s.filter(pl.col("model_id") == model)
            ax.scatter(d["arousal_label_only"] + rng.uniform(-.2, .2, d.height),
                       d["arousal_image_label"] + rng.uniform(-.2, .2, d.height), s=4, alpha=.4)
            ax.plot([1, 9], [1, 9], color="grey", lw=.8)
            ax.set(xlabel="label-only arousal", ylabel="image + label arousal", title=model,
                   xlim=(0.5, 9.5), ylim=(0.5, 9.5))
        out.append(_save(fig, folder / "scatter.png"))
    elif rid in ("A2", "A4"):
        d = result.plots["paired_differences"]
        title = ("A2: single-shot minus context-carry" if rid == "A2"
                 else "A4: FP16 minus 4-bit")
        groups = d["model_id"].unique(maintain_order=True).to_list() if "model_id" in d.columns \
            else [None]
        fig, axes = _new(title + " (paired bootstrap CIs)", sim, len(groups))
        for ax, g in zip(axes, groups, strict=True):
            sub = d if g is None else d.filter(pl.col("model_id") == g)
            _errorbars(ax, sub["metric"], sub["difference"], sub["diff_low"], sub["diff_high"])
            ax.set_title(g or "", fontsize=8)
        out.append(_save(fig, folder / "paired_differences.png"))
    elif rid == "A3":
        d = result.plots["within_category_sd_by_temperature"]
        fig, (ax,) = _new("A3: within-category SD of arousal by temperature", sim)
        for i, (model,) in enumerate(d.select("model_id").unique(maintain_order=True).rows()):
            sub = d.filter(pl.col("model_id") == model).sort("temperature")
            ax.errorbar(sub["temperature"], sub["mean"], yerr=sub["sd_over_repeats"].fill_null(0),
                        marker="o", capsize=3, label=model, color=f"C{i}")
        ax.set(xlabel="temperature", ylabel="within-category SD (mean over repeats)")
        ax.legend(fontsize=7)
        out.append(_save(fig, folder / "within_category_sd_by_temperature.png"))
    elif rid == "A5":
        d = result.plots["entropy_by_category"].filter(pl.col("field") == "arousal")
        models = d["model_id"].unique(maintain_order=True).to_list()
        cats = sorted(d["category"].unique().to_list())
        fig, (ax,) = _new("A5: entropy of the arousal digit distribution by category", sim)
        width = 0.8 / max(len(models), 1)
        for i, model in enumerate(models):
            sub = {r["category"]: r["mean_entropy_nats"]
                   for r in d.filter(pl.col("model_id") == model).iter_rows(named=True)}
            ax.bar(np.arange(len(cats)) + i * width, [sub.get(c, np.nan) for c in cats], width,
                   label=model)
        ax.axhline(np.log(9), color="grey", ls="--", lw=.8, label="uniform (ln 9)")
        ax.set_xticks(np.arange(len(cats)) + width * (len(models) - 1) / 2, cats, fontsize=7)
        ax.set_ylabel("mean entropy (nats)")
        ax.legend(fontsize=7)
        out.append(_save(fig, folder / "entropy_by_category.png"))
    elif rid == "A6":
        d = result.plots["models"]
        fig, axes = _new("A6: kappa and collapse across models", sim, 2)
        axes[0].bar(range(d.height), d["kappa"])
        axes[0].set_xticks(range(d.height), d["model_id"], rotation=30, ha="right", fontsize=7)
        axes[0].set_ylabel("Cohen's kappa")
        axes[1].bar(range(d.height), d["arousal_sd_ratio_human"])
        axes[1].axhline(1, color="grey", ls="--", lw=.8)
        axes[1].set_xticks(range(d.height), d["model_id"], rotation=30, ha="right", fontsize=7)
        axes[1].set_ylabel("within-category SD / humans' (arousal)")
        out.append(_save(fig, folder / "models.png"))
    elif rid == "A7":
        d = result.plots["ai_vs_real"]
        fig, (ax,) = _new("A7: kappa on AI vs real faces (bootstrap CIs)", sim)
        labels = [f"{m}\n{f}" for m, f in zip(d["model_id"], d["faces"], strict=True)]
        _errorbars(ax, labels, d["kappa"], d["kappa_boot_low"], d["kappa_boot_high"])
        out.append(_save(fig, folder / "ai_vs_real.png"))
    elif rid == "A8":
        d = result.plots["fpr_by_race"]
        fig, (ax,) = _new("A8: share of non-angry faces labelled angry (Wilson CIs)", sim)
        labels = [f"{m}\n{r}" for m, r in zip(d["model_id"], d["race"], strict=True)]
        _errorbars(ax, labels, d["fpr"], d["fpr_low"], d["fpr_high"], color="C3")
        ax.set_ylabel("false-positive rate of 'angry'")
        out.append(_save(fig, folder / "fpr_by_race.png"))
    elif rid == "A9":
        d = result.plots["cka_rsa_by_layer"]
        fig, (ax,) = _new("A9: hidden states vs human ratings by layer", sim)
        for i, pool in enumerate(("image_pool", "last_token")):
            sub = d.filter(pl.col("pooling") == pool).sort("layer")
            ax.plot(sub["layer"], sub["debiased_cka"], marker="o", color=f"C{i}",
                    label=f"debiased CKA ({pool})")
            ax.plot(sub["layer"], sub["within_category_debiased_cka"], ls="--", color=f"C{i}",
                    label=f"within-category CKA ({pool})")
        sub = d.filter(pl.col("pooling") == "image_pool").sort("layer")
        ax.plot(sub["layer"], sub["rsa_spearman"], marker="s", color="C2", label="RSA (Spearman)")
        ax.set(xlabel="decoder layer", ylabel="similarity to human ratings")
        ax.legend(fontsize=6)
        out.append(_save(fig, folder / "cka_rsa_by_layer.png"))
    return out
