"""The report as a researcher reads it: the summary table first, sections in the plan's numbering,
no silent cuts, numbers as a paper prints them, "models disagree", figures with their intervals,
SVG beside PNG, one quantity per axis, and report.html checked in a real headless browser.

Results are constructed by hand (metrics.json + tables/*.csv, as write_result writes them), so
every expected number and word below is known in advance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.container import ErrorbarContainer

from emoface.analysis import figures as F
from emoface.analysis.common import AblationResult
from emoface.analysis.document import fmt_ci, fmt_num, fmt_p
from emoface.analysis.report import MAX_ROWS, write_report
from emoface.analysis.summary import overall_words
from tests.headless import browser, file_url


def _write(root: Path, aid: str, outcome: str, tables: dict[str, pl.DataFrame],
           simulated: bool = True, figures: list[str] | None = None, **metrics) -> None:
    folder = root / aid
    (folder / "tables").mkdir(parents=True, exist_ok=True)
    for name, t in tables.items():
        t.write_csv(folder / "tables" / f"{name}.csv")
    (folder / "metrics.json").write_text(json.dumps(
        {"ablation": aid, "outcome": outcome, "simulated": simulated,
         "verdict": f"{aid} verdict: p = 0.0000", "figures": figures or [], "provenance": {},
         **metrics}))


def _a1_main(p_eq: list[float], p_perc: list[float]) -> pl.DataFrame:
    """A1's main table for two models, arousal only (the family), n as a float column."""
    return pl.DataFrame({
        "model_id": ["sim/a", "sim/b"], "field": ["arousal", "arousal"], "n": [1431.0, 1427.0],
        "r_image_label": [0.95, 0.98], "r_image_label_low": [0.94, 0.97],
        "r_image_label_high": [0.96, 0.99], "r_human_image": [0.71, 0.58],
        "r_human_label_only": [0.64, 0.56], "diff_human_r": [0.078, 0.017],
        "diff_boot_low": [0.058, 0.005], "diff_boot_high": [0.102, 0.033],
        "margin": [0.05, 0.05], "p_equivalence": p_eq, "p_perception": p_perc,
        "in_family": [True, True], "p_equivalence_holm": p_eq, "p_perception_holm": p_perc})


@pytest.fixture()
def results(tmp_path) -> Path:
    """Baseline, A1 (models disagree), A2 (26 rows), A9 (60 rows: cut) and A10 (no p)."""
    root = tmp_path / "results"
    _write(root, "baseline", "not_applicable", {"main": pl.DataFrame({
        "model_id": ["sim/a"], "n": [1440], "accuracy": [0.85], "kappa": [0.834],
        "kappa_low": [0.813], "kappa_high": [0.856], "kappa_se": [0.01]})},
        human_within_category_sd={"valence": 0.7, "arousal": 0.7})
    # sim/a: above the margin (p 0.0004 after Holm) -> does not support; sim/b: equivalent
    _write(root, "A1", "cannot_tell", {"main": _a1_main([1.0, 0.002], [0.0004, 1.0])},
           family="arousal x models")
    metrics = ["kappa", "valence_r", "valence_mae", "valence_sd", "valence_within_category_sd",
               "valence_within_correct_sd", "valence_within_label_sd", "arousal_r",
               "arousal_mae", "arousal_sd", "arousal_within_category_sd",
               "arousal_within_correct_sd", "arousal_within_label_sd"]
    main = pl.DataFrame({"model_id": ["sim/a"] * 13 + ["sim/b"] * 13, "metric": metrics * 2,
                         "context_carry": [0.5] * 26, "single_shot": [0.7] * 26,
                         "difference": [0.2] * 26, "diff_low": [0.1] * 26,
                         "diff_high": [0.3] * 26, "p": [0.01] * 26})
    tests = pl.DataFrame({"model_id": ["sim/a", "sim/b"], "metric": ["arousal_within_category_sd"] * 2,
                          "context_carry": [0.5, 0.6], "single_shot": [0.7, 0.65],
                          "difference": [0.2, 0.05], "diff_low": [0.1, -0.02],
                          "diff_high": [0.3, 0.12], "p": [0.001, 0.2], "p_holm": [0.002, 0.2],
                          "grouping": ["intended"] * 2, "outcome": ["supports", "cannot_tell"]})
    _write(root, "A2", "cannot_tell", {"main": main, "verdict_tests": tests})
    layers = pl.DataFrame({"layer": np.repeat(np.arange(30), 2), "pooling": ["image_pool",
                                                                           "last_token"] * 30,
                           "linear_cka": np.linspace(0, .5, 60), "debiased_cka": np.linspace(0, .4, 60),
                           "debiased_cka_p": [0.001] * 60,
                           "within_category_debiased_cka": np.linspace(0, .2, 60),
                           "within_category_p": [0.0] * 60})
    _write(root, "A9", "supports", {"main": layers}, model="sim/a")
    icc = pl.DataFrame({"model_id": ["sim/a"], "temperature": [0.7], "field": ["arousal"],
                        "n_repeats": [3], "n_targets": [1440], "icc2": [0.9], "icc2_low": [0.88],
                        "icc2_high": [0.92], "icc3": [0.91], "icc3_low": [0.89],
                        "icc3_high": [0.93]})
    _write(root, "A10", "supports", {"main": icc, "human": pl.DataFrame(
        {"field": ["arousal"], "icc1": [0.3], "icc1_low": [0.25], "icc1_high": [0.35],
         "n_targets": [1440]})},
        human=[{"field": "arousal", "icc1": 0.3, "icc1_low": 0.25, "icc1_high": 0.35}])
    # a real figure (PNG + SVG) for the baseline section
    fig, (ax,) = F.new_figure("test", True)
    F.errorbars(ax, ["a", "b"], [0.5, 0.6], [0.4, 0.5], [0.6, 0.7])
    F.save(fig, root / "baseline" / "figures" / "kappa.png")
    m = json.loads((root / "baseline" / "metrics.json").read_text())
    (root / "baseline" / "metrics.json").write_text(json.dumps({**m, "figures": ["kappa.png"]}))
    return root


def _summary_rows(report: str) -> list[list[str]]:
    block = report.split("## Summary", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("| ")][1:]  # no header
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


def test_paper_number_formats():
    assert fmt_p(0.0) == fmt_p(0.0004) == "< 0.001"
    assert fmt_p(0.001) == "0.001" and fmt_p(0.0123) == "0.012" and fmt_p(float("nan")) == "–"
    assert fmt_num(1440) == "1440" and fmt_num(0.83456) == "0.835" and fmt_num(123.456) == "123.5"
    assert fmt_ci(0.078, 0.058, 0.102) == "0.078 [0.058, 0.102]"
    assert fmt_ci(0.25, 0.2, 0.3, 1, 100, " %") == "25.0 % [20.0 %, 30.0 %]"


def test_opposite_unit_outcomes_say_models_disagree():
    assert overall_words("cannot_tell", ["supports", "does_not_support"], "models") \
        == "models disagree (1 supports, 1 does not support)"
    assert overall_words("supports", ["supports", "supports"], "models") == "supports"
    # one decides, the other cannot tell: not a disagreement, but the split is stated
    assert overall_words("cannot_tell", ["supports", "cannot_tell"], "models") \
        == "cannot tell: models differ (1 supports, 1 cannot tell)"
    assert overall_words("definition_sensitive", ["supports", "cannot_tell"], "models") \
        .startswith("definition-sensitive")


def test_report_opens_with_the_summary_table(results):
    report = write_report(results, ["A2", "A10", "A1", "A9"], []).read_text()
    body = report.split("## ", 1)[1]
    assert body.startswith("Summary") and "| ablation | question | model or unit |" in report
    rows = _summary_rows(report)
    # plan order, one row per unit, each with a link to its section
    assert [r[0] for r in rows] == ["[A1](#a1)"] * 2 + ["[A2](#a2)"] * 2 + ["[A9](#a9)",
                                                                             "[A10](#a10)"]
    a1a, a1b = rows[0], rows[1]
    assert a1a[2] == "sim/a" and a1a[3].startswith("0.078 [0.058, 0.102]")
    assert a1a[4] == "equivalence 1.000; above margin < 0.001" and a1a[5] == "does not support"
    assert a1b[5] == "supports" and a1a[6] == "**models disagree (1 does not support, 1 supports)**"
    assert "Is the arousal rating reproduced" in a1a[1] and a1b[1] == ""
    # A2: one unit decides, the other cannot tell
    assert rows[2][6] == "**cannot tell: models differ (1 supports, 1 cannot tell)**"
    assert rows[2][4] == "0.002" and rows[3][4] == "0.200"
    # A9: the best layer and its family-wise ps; A10: a CI rule, no p
    assert rows[4][2] == "sim/a, layer 29 (last_token)" and rows[4][4] == "within < 0.001; global 0.001"
    assert rows[5][3].startswith("0.900 [0.880, 0.920]") and rows[5][4] == "CI rule (no p)"
    assert rows[5][5] == "supports"  # 0.88 > the humans' 0.35


def test_sections_in_plan_order_after_the_baseline(results):
    report = write_report(results, ["A10", "A9", "A2", "A1"], []).read_text()
    heads = re.findall(r"^## (\S+)", report, flags=re.M)
    assert heads == ["Summary", "Baseline", "A1:", "A2:", "A9:", "A10:", "Provenance"]
    assert "**Outcome:** models disagree (1 does not support, 1 supports)" in report


def test_an_ablation_with_empty_tables_still_reports(results):
    (results / "A10" / "tables" / "human.csv").write_text("")  # what an empty frame writes
    main = results / "A10" / "tables" / "main.csv"
    main.write_text("model_id\n")
    m = json.loads((results / "A10" / "metrics.json").read_text())
    (results / "A10" / "metrics.json").write_text(json.dumps({**m, "outcome": "not_applicable"}))
    rows = _summary_rows(write_report(results, ["A10"], []).read_text())
    assert rows == [["[A10](#a10)", rows[0][1], "–", "–", "–", "–", "**not applicable**"]]


def test_no_table_is_cut_silently(results):
    report = write_report(results, ["A1", "A2", "A9", "A10"], []).read_text()
    a2 = report.split("## A2:", 1)[1].split("\n## ", 1)[0]
    paired = a2.split("**Paired differences", 1)[1]
    rows = [ln for ln in paired.splitlines() if ln.startswith("| sim/")]
    assert len(rows) == 26 and {r.split(" | ")[0] for r in rows} == {"| sim/a", "| sim/b"}
    a9 = report.split("## A9:", 1)[1].split("\n## ", 1)[0]
    assert len([ln for ln in a9.splitlines() if re.match(r"\| \d+ \|", ln)]) == MAX_ROWS
    assert f"First {MAX_ROWS} of 60 rows; the full table is `A9/tables/main.csv`." in a9
    assert "First" not in a2


def test_numbers_as_a_paper_prints_them(results):
    report = write_report(results, ["A1", "A2", "A9", "A10"], []).read_text()
    assert not re.search(r"\b0\.0000\b", report)  # the verdict's "p = 0.0000" too
    assert "A1 verdict: p < 0.001" in report
    a1 = report.split("## A1:", 1)[1].split("\n## ", 1)[0]
    row = next(ln for ln in a1.splitlines() if ln.startswith("| sim/a"))
    assert "| 1431 |" in row  # a count stored as float prints as an integer
    header = next(ln for ln in a1.splitlines() if ln.startswith("| model |"))
    assert "in_family" not in header and "| margin |" not in header  # only what a reader needs
    assert "`A1/tables/main.csv`" in a1  # ... and where every column is


def test_report_html_is_self_contained(results):
    write_report(results, ["A1", "A2", "A9", "A10"], [])
    page = (results / "report.html").read_text()
    assert "data:image/png;base64," in page and 'href="baseline/figures/kappa.svg"' in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?:", page)
    assert page.count('class="summary sortable"') == 1


def test_report_html_in_a_real_browser(results):
    write_report(results, ["A1", "A2", "A9", "A10"], [])
    with browser() as b:
        b.get(file_url(results / "report.html"))
        b.wait("return document.readyState === 'complete'")
        imgs = b.js("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert imgs and all(done and width > 100 for done, width in imgs)
        first = "return document.querySelector('table.summary tbody tr td:nth-child(3)').textContent"
        assert b.js(first) == "sim/a"
        # the p column sorts numerically: the smallest p first, then largest first
        b.click("table.summary th:nth-child(5)")
        col = ("return Array.from(document.querySelectorAll('table.summary tbody tr')).map("
               "r => r.cells[4].dataset.v === undefined ? null : parseFloat(r.cells[4].dataset.v))")
        asc = [v for v in b.js(col) if v is not None]
        assert asc == sorted(asc) and len(asc) == 5
        b.click("table.summary th:nth-child(5)")
        desc = [v for v in b.js(col) if v is not None]
        assert desc == sorted(desc, reverse=True)
        assert b.js("return document.getElementById('a9') !== null")


# --- figures --------------------------------------------------------------------------------

@pytest.fixture()
def drawn(monkeypatch):
    """The Figure objects the figure functions save (they are also written)."""
    out = []
    real = F.save

    def save(fig, path):
        out.append(fig)
        return real(fig, path)
    monkeypatch.setattr(F, "save", save)
    return out


def _has_intervals(ax) -> bool:
    return any(isinstance(c, ErrorbarContainer) and c.has_yerr for c in ax.containers)


def test_save_writes_an_svg_beside_each_png_byte_stable(tmp_path):
    paths = []
    for name in ("a.png", "b.png"):
        fig, (ax,) = F.new_figure("t", False)
        ax.plot([1, 2], [3, 4])
        paths.append(F.save(fig, tmp_path / name))
    for p in paths:
        assert p.exists() and p.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    assert paths[0].with_suffix(".svg").read_bytes() == paths[1].with_suffix(".svg").read_bytes()


def test_paired_differences_one_quantity_per_axis(tmp_path, drawn):
    metrics = ["kappa", "valence_r", "arousal_r", "valence_mae", "arousal_mae", "arousal_sd",
               "arousal_within_category_sd", "arousal_within_correct_sd"]
    d = pl.DataFrame({"model_id": ["m1"] * 8 + ["m2"] * 8, "metric": metrics * 2,
                      "difference": [0.1] * 16, "diff_low": [0.0] * 16, "diff_high": [0.2] * 16})
    res = AblationResult("A2", "", "cannot_tell", plots={"paired_differences": d})
    F.paired_differences_figure(res, "A2", tmp_path / "p.png")
    axes = drawn[0].axes
    assert len(axes) == 8  # 2 models x (kappa, r, MAE, SD)
    groups = [{t.get_text() for t in ax.get_xticklabels()} for ax in axes[:4]]
    assert groups == [{"kappa"}, {"valence_r", "arousal_r"}, {"valence_mae", "arousal_mae"},
                      {"arousal_sd", "arousal_within_category_sd", "arousal_within_correct_sd"}]
    assert all(_has_intervals(ax) for ax in axes)


def test_baseline_and_a6_estimates_carry_their_intervals(tmp_path, drawn):
    from emoface.ablations import get

    main = pl.DataFrame({
        "model_id": ["sim/a", "fer/x"], "kappa": [0.8, 0.5], "kappa_low": [0.7, 0.4],
        "kappa_high": [0.9, 0.6], "valence_r": [0.8, None], "valence_r_low": [0.7, None],
        "valence_r_high": [0.9, None], "arousal_r": [0.6, None], "arousal_r_low": [0.5, None],
        "arousal_r_high": [0.7, None], "valence_within_category_sd": [0.5, None],
        "arousal_within_category_sd": [0.6, None]})
    F.baseline_figures(AblationResult("baseline", "", "n/a", tables={"main": main}, metrics={
        "human_within_category_sd": {"valence": 0.7, "arousal": 0.7}}), tmp_path)
    kappa_ax, r_ax, sd_ax = drawn[0].axes
    assert _has_intervals(kappa_ax) and _has_intervals(r_ax)
    assert "no CI" in sd_ax.get_title()  # the baseline computes none for an SD
    a6 = main.with_columns(pl.Series("arousal_sd_ratio_human", [0.9, 1.2]),
                           pl.Series("arousal_sd_ratio_low", [0.8, 1.1]),
                           pl.Series("arousal_sd_ratio_high", [1.0, 1.3]))
    get("A6").figures(AblationResult("A6", "", "cannot_tell", tables={"main": a6}), tmp_path)
    assert all(_has_intervals(ax) for ax in drawn[1].axes)
    assert (tmp_path / "models.svg").exists()
