"""A small data folder with native answers: 48 stimuli, one simulated model, two conditions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from emoface.config import load_params
from emoface.inference.service import run_condition_for
from emoface.paths import DataPaths
from emoface.stimuli.generate import generate_stimulus_set
from tests.conftest import write_small_project_params

MODEL = "simulated/gemma3-4b"


@pytest.fixture(scope="session")
def native_store(tmp_path_factory) -> tuple[Path, Path]:
    """(params.yaml, data folder): the baseline and single-shot of MODEL on 48 stimuli."""
    tmp = tmp_path_factory.mktemp("native")
    params_file = write_small_project_params(tmp / "cfg")
    p = load_params(params_file)
    data = DataPaths(tmp / "data")
    generate_stimulus_set(p.study, p.stimuli, data.stimulus_set(p.stimuli.set_name))
    run_condition_for(p, data, MODEL, protocol="context_carry")
    run_condition_for(p, data, MODEL, protocol="single_shot")
    return params_file, data.root


@pytest.fixture
def store_copy(native_store, tmp_path) -> tuple[Path, Path]:
    """A private copy of the native store (for tests that damage or add to it)."""
    params_file, data = native_store
    shutil.copytree(data, tmp_path / "data")
    return params_file, tmp_path / "data"


@pytest.fixture(scope="session")
def lab(native_store, tmp_path_factory) -> tuple[Path, dict]:
    """(folder, per-model import plan) of "a lab's own files" made from the native export."""
    from emoface.results.export import export
    from tests.results.lab import write_lab_files

    params_file, data = native_store
    tmp = tmp_path_factory.mktemp("lab")
    export(load_params(params_file), DataPaths(data), tmp / "export")
    return tmp / "lab", write_lab_files(tmp / "export", tmp / "lab")


@pytest.fixture
def fresh(native_store, tmp_path) -> Path:
    """An empty data folder holding only the same stimulus set."""
    _, data = native_store
    shutil.copytree(data / "stimuli", tmp_path / "fresh" / "stimuli")
    return tmp_path / "fresh"
