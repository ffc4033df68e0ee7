from pathlib import Path

import pytest
from pydantic import ValidationError

from emoface.config import Params, load_params, parse_params
from emoface.errors import ConfigError
from tests.conftest import REPO


def test_repository_params_load_into_frozen_models():
    p = load_params(REPO / "params.yaml")
    assert p.study.emotions == ("angry", "disgusted", "fearful", "happy", "sad", "surprised")
    n = (len(p.stimuli.races) * len(p.stimuli.genders) * p.stimuli.identities_per_cell
         * len(p.study.emotions))
    assert n == 1440
    with pytest.raises(ValidationError):  # frozen: nobody mutates config downstream
        p.stimuli.seed = 1  # type: ignore[misc]


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"stimuli\.colour: unknown key"):
        parse_params({"stimuli": {"colour": "red"}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"stimuli\.identities_per_cell"):
        parse_params({"stimuli": {"identities_per_cell": "sixty"}})


def test_nested_wrong_value_is_named():
    with pytest.raises(ConfigError, match=r"stimuli\.norms\.raters_min"):
        parse_params({"stimuli": {"norms": {"raters_min": 0}}})


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"inferenc: unknown key"):
        parse_params({"inferenc": {}})


def test_missing_and_broken_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stimuli: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_defaults_equal_repository_file():
    # params.yaml spells out the defaults; drift between the two would be confusing.
    assert load_params(REPO / "params.yaml") == Params()


def test_real_face_set_may_not_replace_the_embedded_set():
    with pytest.raises(ConfigError, match="real_faces.name 'embedded' is also stimuli.set_name"):
        parse_params({"real_faces": {"name": "embedded"}})


@pytest.mark.parametrize("section,value", [
    ({"ablations": {"A3": {"temperatures": [2.5]}}}, "ablations.A3.temperatures.0"),
    ({"ablations": {"A3": {"temperatures": [float("inf")]}}}, "ablations.A3.temperatures.0"),
    ({"ablations": {"A3": {"temperatures": []}}}, "ablations.A3.temperatures"),
    ({"models": {"fer": ["fer/mini-xception", "fer/mini-xception"]}}, "models.fer"),
])
def test_bad_values_name_their_key(section, value):
    with pytest.raises(ConfigError, match=value.replace(".", r"\.")):
        parse_params(section, source="p.yaml")
