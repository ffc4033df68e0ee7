"""The report names each ablation's multiplicity adjustment: A9's family is max-statistic, not
Holm (issue 19)."""

from __future__ import annotations

import polars as pl

from emoface.analysis.common import AblationResult
from emoface.analysis.report import write_report, write_result


def _result(aid: str, metrics: dict) -> AblationResult:
    plots = {"cka_rsa_by_layer": pl.DataFrame({
        "layer": [0, 0], "pooling": ["image_pool", "last_token"], "linear_cka": [0.1, 0.2],
        "debiased_cka": [0.1, 0.2], "within_category_debiased_cka": [0.0, 0.1],
        "rsa_spearman": [0.1, None]})} if aid == "A9" else {
        "fpr_by_race": pl.DataFrame({"model_id": ["m"], "race": ["black"], "fpr": [0.1],
                                     "fpr_low": [0.05], "fpr_high": [0.2]})}
    main = plots["cka_rsa_by_layer"].with_columns(  # the columns A9's figure draws
        debiased_cka_null95_fwe=pl.lit(0.3), within_category_null95_fwe=pl.lit(0.3)) \
        if aid == "A9" else pl.DataFrame({"x": [1]})
    return AblationResult(aid, f"{aid} verdict", "cannot_tell", tables={"main": main},
                          plots=plots, metrics=metrics)


def test_a9_header_says_max_statistic_and_a8_says_holm(tmp_path):
    write_result(_result("A9", {"family": "2 layer x pooling",
                                "adjustment": "max-statistic permutation p"}), tmp_path)
    write_result(_result("A8", {"family": "models"}), tmp_path)
    report = write_report(tmp_path, ["A8", "A9"], []).read_text()
    a9 = report[report.index("## A9"):]
    a8 = report[report.index("## A8"):report.index("## A9")]
    assert "(multiplicity family: 2 layer x pooling, max-statistic permutation p)" in a9
    assert "Holm" not in a9.split("**Outcome:**")[0]
    assert "(multiplicity family: models, Holm)" in a8
