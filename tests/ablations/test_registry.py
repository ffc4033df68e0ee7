"""The ablation registry: every consumer follows it, unknown ids are errors naming the known ones;
the baseline is an ablation of the registry, never asked for by name elsewhere."""

from __future__ import annotations

import ast
import re

import pytest

from emoface.ablations import (
    MODULES,
    build_plan,
    execution_order,
    get,
    params_model,
    registry,
    select,
    tiers,
)
from emoface.config import Params, parse_params
from emoface.errors import ConfigError
from tests.conftest import REPO
from tests.fitness import identifiers, production_files_where, string_literals, word


def test_every_module_declares_one_ablation():
    assert len(registry()) == len(MODULES) == 11
    for aid, a in registry().items():
        assert a.id == aid and a.hypothesis and a.interpretation and a.tiers
        assert callable(a.work) and callable(a.analysis) and callable(a.figures)


def test_extended_tier_is_complete_plus_a10_a11():
    t = tiers()
    assert list(t) == ["minimal", "competitive", "complete", "extended"]
    assert t["extended"] == (*t["complete"], "A10", "A11")
    assert execution_order()[-2:] == ("A10", "A11")
    assert select(tier="extended")[-2:] == ["A10", "A11"]
    # the project's own ablations are priority 4: --priority 3 is still the plan's complete tier
    assert set(select(priority=3)) == set(t["complete"])


def test_unknown_ids_are_errors_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown ablation 'A12' \(known: A1, A2, .*A10, A11\)"):
        get("A12")
    with pytest.raises(ValueError, match=r"A12.*known: A1, .*A11"):
        select(only=["A5", "A12"])
    with pytest.raises(ValueError, match="unknown tier 'huge'.*extended"):
        select(tier="huge")


def test_figures_of_an_unknown_result_are_an_error_not_a_no_op(tmp_path):
    from emoface.analysis.common import AblationResult
    from emoface.analysis.figures import figures_for

    with pytest.raises(ValueError, match="unknown ablation 'A99'"):
        figures_for(AblationResult("A99", "", "cannot_tell"), tmp_path)


def test_params_section_comes_from_the_modules():
    assert set(params_model().model_fields) == {a.id for a in registry().values() if a.params}
    with pytest.raises(ConfigError, match=r"ablations\.A3\.repeats"):
        parse_params({"ablations": {"A3": {"repeats": 0}}})
    with pytest.raises(ConfigError, match=r"ablations\.A10: unknown key"):
        parse_params({"ablations": {"A10": {}}})  # A10 has no parameters


def test_only_a10_a11_need_nothing_beyond_a3_and_the_baseline():
    p = Params()
    models = list(p.models.study)
    have = {i.key for i in build_plan(p, ["A3"], models).unique}
    need = {i.key for i in build_plan(p, ["A10", "A11"], models).unique}
    assert need <= have
    # A10 reads every T > 0 repeat of A3, and nothing at other temperatures
    a10 = [i for i in build_plan(p, ["A10"], models).per_ablation["A10"]
           if i.condition.temperature > 0]
    assert len(a10) == len(models) * 3 * 3


@pytest.mark.parametrize("aid", ["A10", "A11"])
def test_new_ablations_are_named_in_at_most_two_production_files(aid):
    pattern = re.compile(rf"\b({aid}|{aid.lower()}_\w+)\b")
    named = sorted(f.relative_to(REPO).as_posix()
                   for folder in ("emoface", "flows", "tasks", "schemas")
                   for f in (REPO / folder).rglob("*.py") if pattern.search(f.read_text()))
    module = next(m for m in MODULES if m.startswith(aid.lower() + "_"))
    assert named == sorted([f"emoface/ablations/{module}.py", "emoface/ablations/__init__.py"])


def test_dvc_analyses_stage_lists_every_registered_ablation():
    """dvc.yaml cannot loop over the registry, so this keeps its hand-written lists complete."""
    import yaml

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["analyses"]
    outs = set(stage["outs"])
    metrics = set(stage["metrics"])
    plots = {next(iter(p)): p[next(iter(p))] for p in stage["plots"]}
    missing = []
    for aid in ["baseline", *registry()]:
        folder = f"data/results/{aid}"
        missing += [p for p in (f"{folder}/tables", f"{folder}/figures", f"{folder}/metrics.json")
                    if p not in outs]
        missing += [f"{folder}/headline.json"] if f"{folder}/headline.json" not in metrics else []
        if not any(p.startswith(f"{folder}/plots/") for p in plots):
            missing.append(f"{folder}/plots")
    assert not missing, f"dvc.yaml's analyses stage lacks: {', '.join(missing)}"
    # every plot names its x, y and template (DVC otherwise draws `step` against the last column)
    incomplete = [p for p, spec in plots.items() if not {"x", "y", "template"} <= set(spec or {})]
    assert not incomplete, f"plots without x, y and template: {incomplete}"
    assert "--tier extended" in stage["cmd"]  # the largest tier: every registered ablation


def test_planning_loads_no_analysis_code():
    """The registry imports every module to read its metadata; their analysis code (and scipy,
    statsmodels, polars, matplotlib) must load only when an analysis runs."""
    import subprocess
    import sys

    code = ("import sys; from emoface.config import Params; from emoface.ablations import "
            "build_plan, registry; p = Params(); build_plan(p, list(registry()), p.models.study); "
            "print(' '.join(m for m in ('emoface.analysis', 'scipy', 'statsmodels', 'polars', "
            "'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"planning imported: {out.stdout.strip()}"


# Production files outside emoface/ablations/ that may still write the word, and why. Every other
# use goes through the registry: ``get(id)`` and the ablation's attributes (``decides``,
# ``title``, ``headline``, ``report``, ``analysis_seconds``), ``with_baseline(ids)``,
# ``Plan.analyses(params)`` and, for work that needs another's answers, ``WorkItem.depends_on``.
BASELINE_WORD_ALLOWED = {
    # the label source's value: part of stored condition ids (text_only-baseline_t0_r1) and of
    # the rows' label_source column; Condition.labels_from turns it into the condition it names
    "emoface/inference/conditions.py",
    # the predictions column's allowed values (LabelSource's, restated: the schemas import no
    # emoface.inference, so the stimuli stage's DVC deps stay small; checked below)
    "schemas/predictions.py",
    # DVC's own word: an experiment's baseline revision (DVC_EXP_BASELINE_REV), not the ablation
    "tasks/monitor.py",
}


def _names_the_baseline(tree: ast.AST) -> bool:
    """An id, not prose: a string literal without spaces (an id, a path, a pattern) containing
    the word ``baseline``, or the name ``BASELINE``. Help text and messages may say "baseline";
    docstrings and comments are not code."""
    w = word("baseline")
    return (any(w.search(s) and not re.search(r"\s", s) for s in string_literals(tree))
            or "BASELINE" in set(identifiers(tree)))


def test_the_baseline_detector_sees_ids_and_ignores_prose():
    named = ast.parse('x = "baseline"\nif aid == "baseline": pass\n')
    const = ast.parse("from emoface.ablations import BASELINE\n")
    path = ast.parse('p = f"results/baseline/{x}"\n')
    prose = ast.parse('"""The baseline."""\n# the baseline\n'
                      'raise ValueError("needs the baseline of the model first")\n')
    assert _names_the_baseline(named) and _names_the_baseline(const)
    assert _names_the_baseline(path)
    assert not _names_the_baseline(prose)


def test_the_baseline_is_named_only_in_the_ablations_package():
    named = production_files_where(_names_the_baseline)
    outside = {f for f in named if not f.startswith("emoface/ablations/")}
    assert outside <= BASELINE_WORD_ALLOWED, sorted(outside - BASELINE_WORD_ALLOWED)
    assert "emoface/ablations/baseline.py" in named  # the detector still sees its own module
    from typing import get_args

    from emoface.inference.conditions import LabelSource
    from schemas.predictions import LABEL_SOURCES

    assert LABEL_SOURCES == get_args(LabelSource)


def test_the_baseline_is_an_ablation_of_the_registry():
    from emoface.ablations import baseline_ablation, with_baseline

    base = baseline_ablation()
    assert get(base.id) is base and base.id not in registry() and base.id not in select(
        tier="extended")
    assert with_baseline(["A1"]) == [base.id, "A1"]
    assert not base.decides and all(a.decides for a in registry().values())
    assert base.headline is not None and base.report is not None and base.report.views
    p = Params()
    plan = build_plan(p, ["A1"], list(p.models.study))
    work = plan.analyses(p)
    assert list(work) == [base.id, "A1"] and work[base.id] == base.work(p, plan.models)
    # A1's own-label text-only conditions wait for the model's answers in the base condition
    deps = {i.key: i.depends_on for i in work["A1"] if i.depends_on is not None}
    assert deps and all(d.key in {i.key for i in work[base.id]} for d in deps.values())
