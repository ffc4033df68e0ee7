"""Shared fixtures: small parameter sets and stimulus sets built by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoface.config import Params, StimuliParams
from emoface.paths import StimulusSetPaths
from emoface.stimuli.generate import generate_stimulus_set

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionfinish(session, exitstatus):
    from tests.prefect_shared import stop_shared_server

    stop_shared_server()


@pytest.fixture(scope="session")
def small_params() -> Params:
    """2 races x 2 genders x 2 identities x 6 emotions = 48 stimuli."""
    return Params(stimuli=StimuliParams(identities_per_cell=2))


@pytest.fixture
def simulated_store(tmp_path):
    """48 stimuli and one simulated model's baseline, stored: (params, data paths)."""
    from emoface.config import ModelsParams
    from emoface.inference.service import run_condition_for
    from emoface.paths import DataPaths

    p = Params(stimuli=StimuliParams(identities_per_cell=2),
               models=ModelsParams(study=("simulated/gemma3-4b",), fer=()))
    data = DataPaths(tmp_path / "data")
    generate_stimulus_set(p.study, p.stimuli, data.stimulus_set("embedded"))
    run_condition_for(p, data, "simulated/gemma3-4b", protocol="context_carry")
    return p, data


@pytest.fixture(scope="session")
def small_set(tmp_path_factory, small_params) -> StimulusSetPaths:
    out = StimulusSetPaths(tmp_path_factory.mktemp("stimuli") / "small")
    generate_stimulus_set(small_params.study, small_params.stimuli, out)
    return out


def write_small_project_params(folder: Path) -> Path:
    """params.yaml for a quick but complete run: 48 stimuli, a short A3 grid, N = 4 models."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["stimuli"]["identities_per_cell"] = 2
    params["inference"]["batch_size"] = 24
    params["ablations"]["A3"] = {"temperatures": [0.0, 0.7], "repeats": 2}
    params["ablations"]["A6"]["models"] = ["simulated/qwen2-vl-7b", "simulated/smolvlm2"]
    params["real_faces"]["per_emotion"] = 4
    params["analysis"].update(bootstrap=200, permutations=99)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
