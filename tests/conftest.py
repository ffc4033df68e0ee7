"""Shared fixtures: small parameter sets and stimulus sets built by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoface.config import Params, StimuliParams
from emoface.paths import StimulusSetPaths
from emoface.stimuli.generate import generate_stimulus_set

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def small_params() -> Params:
    """2 races x 2 genders x 2 identities x 6 emotions = 48 stimuli."""
    return Params(stimuli=StimuliParams(identities_per_cell=2))


@pytest.fixture(scope="session")
def small_set(tmp_path_factory, small_params) -> StimulusSetPaths:
    out = StimulusSetPaths(tmp_path_factory.mktemp("stimuli") / "small")
    generate_stimulus_set(small_params.study, small_params.stimuli, out)
    return out
