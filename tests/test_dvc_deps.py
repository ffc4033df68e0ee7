"""dvc.yaml's code deps cover what each stage runs, and the committed dvc.lock matches the code.

The deps are derived: each stage's command is imported in a fresh interpreter and every module of
this repository it loads must lie under one of the stage's deps (a module missing from the deps
would let DVC call stale outputs current). The lock test is what `dvc status` says on a checkout:
a code or params dep that differs from dvc.lock means the committed results were not made by this
code; refresh with `make repro` and commit dvc.lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

ENTRY = {  # what each stage's cmd imports before it runs
    "stimuli": ["emoface.cli", "emoface.stimuli.generate"],
    "real_faces": ["emoface.cli", "emoface.stimuli.datasets"],
    "inference": ["flows.ablations", "flows.pipeline", "emoface.inference.engine",
                  "emoface.inference.shared", "emoface.backends.simulated",
                  "emoface.backends.ollama", "emoface.backends.fer"],
    "analyses": ["flows.ablations", "flows.pipeline", "emoface.analysis.report",
                 "emoface.analysis.headline", *[f"emoface.ablations.{m}" for m in (
                     "a1_text_only", "a2_single_shot", "a3_temperature", "a4_quantization",
                     "a5_dark_knowledge", "a6_more_models", "a7_real_faces", "a8_fpr_by_race",
                     "a9_hidden_states", "a10_test_retest", "a11_calibration")]],
}


def _start_import(modules: list[str]) -> subprocess.Popen:
    """A fresh interpreter that imports ``modules`` and prints every file of this repository it
    then holds (relative to the checkout)."""
    code = ("import importlib, sys, pathlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "root = pathlib.Path.cwd().resolve()\n"
            # the installed packages are not the project's code, even where the venv lies
            # inside the checkout (make setup puts .venv there)
            "env = [pathlib.Path(p).resolve() for p in {sys.prefix, sys.base_prefix}]\n"
            "for mod in list(sys.modules.values()):\n"
            "    f = getattr(mod, '__file__', None)\n"
            "    p = pathlib.Path(f).resolve() if f else None\n"
            "    if p and p.is_relative_to(root) and not any(p.is_relative_to(e) for e in env):\n"
            "        print(p.relative_to(root).as_posix())\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def imported() -> dict[str, list[str]]:
    """Each stage's repository files, from its own fresh interpreter; the interpreters start
    together (most of each is importing, and a second core would otherwise sit idle)."""
    procs = {stage: _start_import(modules) for stage, modules in ENTRY.items()}
    files = {}
    try:
        for stage, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"{stage}: {err[-3000:]}"
            files[stage] = sorted(set(out.split()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return files


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_stage_deps_cover_every_module_it_imports(stage, imported):
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    code_deps = [d for d in deps if not d.startswith("data/")]
    uncovered = [f for f in imported[stage]
                 if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in code_deps)]
    assert not uncovered, f"dvc.yaml stage '{stage}' lacks deps: {uncovered}"


def test_stage_entries_are_the_stage_commands():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "flows/ablations.py" in stages["inference"]["cmd"]
    assert "flows/ablations.py" in stages["analyses"]["cmd"]
    assert "stimuli generate" in stages["stimuli"]["cmd"]
    assert "stimuli real-faces" in stages["real_faces"]["cmd"]


@pytest.mark.integration
def test_dvc_lock_matches_the_code():
    """Only code and params deps count: data outputs are absent on a fresh checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(DVC_NO_ANALYTICS="1")
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    stale = []
    for stage, changes in json.loads(out.stdout or "{}").items():
        for change in changes:
            if not isinstance(change, dict):
                continue
            for path, what in change.get("changed deps", {}).items():
                if not path.startswith("data/"):
                    stale.append(f"{stage}: {path} {what}")
            if "changed command" in change:  # noqa: SIM102
                stale.append(f"{stage}: command changed")
    assert not stale, ("dvc.lock does not match the code (refresh with `make repro` and commit "
                       "dvc.lock): " + "; ".join(stale))
