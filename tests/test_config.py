import os
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


# --- every number has a documented range, checked at load (issue 23 item 4) -------------------

def test_every_number_has_both_bounds_and_the_docs_list_them():
    from emoface.config import param_ranges, ranges_table

    rows = param_ranges()
    keys = [r[0] for r in rows]
    # the numbers the issue names are all there
    assert {"inference.ollama.timeout_s", "inference.ollama.backoff_s", "analysis.bootstrap",
            "inference.max_tokens", "stimuli.identities_per_cell",
            "ablations.A3.temperatures[]", "execution.worker_timeout_s"} <= set(keys)
    unbounded = [r[0] for r in rows if not r[2] or not r[3]]
    assert unbounded == [], f"numbers without a lower and an upper bound: {unbounded}"
    assert ranges_table() in (REPO / "docs" / "params.md").read_text(), (
        "docs/params.md is out of date: paste emoface.config.ranges_table() into it")
    # the table shows what the model enforces: backoff_s is [0, 60]
    assert "| `inference.ollama.backoff_s` | float | [0, 60] | `1.0` |" in ranges_table()


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


BAD_SETTINGS = [  # (yaml, the key the one line names, words in it)
    ("inference: {ollama: {timeout_s: .inf}}", "inference.ollama.timeout_s", "finite"),
    ("inference: {ollama: {timeout_s: 1.0e+9}}", "inference.ollama.timeout_s", "3600"),
    ("inference: {ollama: {timeout_s: 0}}", "inference.ollama.timeout_s", "greater than 0"),
    ("inference: {ollama: {backoff_s: 1.0e+300}}", "inference.ollama.backoff_s", "60"),
    ("inference: {ollama: {backoff_s: 1e300}}", "inference.ollama.backoff_s", "valid number"),
    ("inference: {ollama: {backoff_s: 100000}}", "inference.ollama.backoff_s", "60"),
    ("inference: {ollama: {backoff_s: -1}}", "inference.ollama.backoff_s", "0"),
    ("inference: {ollama: {host: 'ht!tp://::::'}}", "inference.ollama.host", "not http"),
    ("inference: {ollama: {host: 'localhost:99999'}}", "inference.ollama.host", "65535"),
    ("inference: {ollama: {host: 'ftp://gpu1'}}", "inference.ollama.host", "'ftp'"),
    ("inference: {ollama: {host: 'gpu 1:11434'}}", "inference.ollama.host", "space"),
    ("inference: {ollama: {host: ':11434'}}", "inference.ollama.host", "host name"),
    ("inference: {ollama: {host: ''}}", "inference.ollama.host", "empty"),
    ("inference: {max_tokens: 1000000000}", "inference.max_tokens", "4096"),
    ("inference: {seed: -1}", "inference.seed", "0"),
    ("inference: {batch_size: 0}", "inference.batch_size", "1"),
    ("analysis: {bootstrap: 1000000000}", "analysis.bootstrap", "100000"),
    ("analysis: {alpha: .nan}", "analysis.alpha", "finite"),
    ("stimuli: {identities_per_cell: 100000000}", "stimuli.identities_per_cell", "1000"),
    ("stimuli: {seed: 99999999999}", "stimuli.seed", "2147483647"),
    ("stimuli: {set_name: " + "a" * 300 + "}", "stimuli.set_name", "64 characters"),
    ("real_faces: {per_emotion: 0}", "real_faces.per_emotion", "1"),
    ("models: {study: [foo/bar]}", "models.study.0", "backend one of: simulated, ollama"),
    ("models: {study: [ollama/]}", "models.study.0", "backend one of"),
    ("ablations: {A3: {repeats: 1000000}}", "ablations.A3.repeats", "100"),
    ("ablations: {A6: {models: [gpt4o]}}", "ablations.A6.models.0", "backend one of"),
    ("execution: {worker_timeout_s: .inf}", "execution.worker_timeout_s", "finite"),
    ("execution: {dask: 'tcp://a b'}", "execution.dask", "pattern"),
]


@pytest.mark.parametrize("text,key,words", BAD_SETTINGS, ids=[k for _, k, _ in BAD_SETTINGS])
def test_a_setting_out_of_range_is_one_line_naming_its_key(tmp_path, text, key, words):
    path = _yaml(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {key}: "), msg
    assert words in msg, msg


@pytest.mark.parametrize("given,read_as", [
    ("localhost:11434", "http://localhost:11434"),       # as OLLAMA_HOST is often set
    ("localhost", "http://localhost:11434"),
    ("127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://gpu1", "http://gpu1:80"),
    ("HTTPS://Gpu1.lab.example.org/ollama/", "https://gpu1.lab.example.org:443/ollama"),
    ("[::1]:11434", "http://[::1]:11434"),
    ("http://[0:0::1]", "http://[::1]:80"),
])
def test_a_host_without_a_scheme_is_read_as_http(tmp_path, given, read_as):
    p = load_params(_yaml(tmp_path, f"inference: {{ollama: {{host: '{given}'}}}}\n"))
    assert p.inference.ollama.host == read_as


def test_ollama_host_from_the_environment_is_checked_the_same_way(monkeypatch):
    from emoface.inference.preflight import preflight

    monkeypatch.setenv("OLLAMA_HOST", "ht!tp://::::")
    with pytest.raises(ConfigError, match=r"^OLLAMA_HOST='ht!tp://::::': scheme 'ht!tp'"):
        preflight(["ollama/gemma3:4b"], Params().inference)


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    # nine levels of nine aliases: 9**9 = 387 million values once expanded
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    path = _yaml(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"expands to more than 100,000 values once its aliases"):
        load_params(path)
    # a few aliases are fine (and still validated as usual: unknown keys)
    ok = _yaml(tmp_path, "x: &t [0.0, 0.7]\nablations: {A3: {temperatures: *t}}\n")
    with pytest.raises(ConfigError, match=r"x: unknown key"):
        load_params(ok)


def test_a_self_referencing_alias_and_deep_nesting_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="refers to the anchor it is inside"):
        load_params(_yaml(tmp_path, "study: &s {emotions: *s}\n"))
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_params(_yaml(tmp_path, "study: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_a_huge_params_file_is_refused_before_it_is_read(tmp_path):
    from emoface.config import MAX_PARAMS_BYTES

    path = tmp_path / "params.yaml"
    with open(path, "wb") as fh:
        fh.write(b"# comment\n")
        fh.seek(MAX_PARAMS_BYTES + 10)
        fh.write(b"\n")
    with pytest.raises(ConfigError, match=r"bytes; a parameters file holds at most 1,048,576"):
        load_params(path)


def test_a_pipe_or_device_as_params_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "params.fifo"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block forever
    with pytest.raises(ConfigError, match="not a regular file"):
        load_params(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_params("/dev/zero")


# --- the command line of flows/ablations.py ----------------------------------------------------

def _flow_refuses(capsys, argv: list[str], *words: str) -> str:
    from flows.ablations import main

    assert main(argv) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("args,words", [
    (["--priority", "-5"], ["--priority -5", "from 1 to 4"]),
    (["--priority", "0"], ["--priority 0"]),
    (["--priority", "5"], ["--priority 5"]),
    (["--only", "A5,,A8"], ["--only", "empty ablation id"]),
    (["--dask", "scheduler:8786"], ["--dask", "tcp://HOST:8786"]),
    (["--data", "/dev/null"], ["--data /dev/null", "not a folder"]),
])
def test_bad_command_line_values_exit_2_in_one_line(capsys, tmp_path, args, words):
    _flow_refuses(capsys, ["--dry-run", "--data", str(tmp_path / "d"), *args], *words)


def test_data_naming_a_file_or_a_too_long_name_is_one_line(capsys, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    _flow_refuses(capsys, ["--dry-run", "--data", str(f)], f"--data {f}: it exists")
    _flow_refuses(capsys, ["--dry-run", "--data", str(f / "data")], "its parent")
    _flow_refuses(capsys, ["--dry-run", "--data", str(tmp_path / ("d" * 256))],
                  "longer than 255 bytes")
    assert not f.is_dir() and f.read_text() == "x"


def test_a_params_error_is_one_line_through_the_flow(capsys, tmp_path):
    path = _yaml(tmp_path, "inference: {ollama: {timeout_s: .inf}}\n")
    _flow_refuses(capsys, ["--dry-run", "--params", str(path), "--data", str(tmp_path / "d")],
                  "inference.ollama.timeout_s", "finite")


def test_emoface_commands_check_data_set_names_and_condition_values(tmp_path):
    from typer.testing import CliRunner

    from emoface.cli import app

    def refused(args, *words):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output
        lines = [x for x in res.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and all(w in lines[0] for w in words), lines

    params = str(REPO / "params.yaml")
    refused(["store", "status", "--data", "/dev/null"], "--data /dev/null", "not a folder")
    refused(["stimuli", "import", "a" * 300, "--images", str(tmp_path), "--csv",
             str(tmp_path / "x.csv"), "--params", params, "--data", str(tmp_path / "d")],
            "300 characters is too long: at most 64")
    refused(["infer", "--temperature", "inf", "--params", params, "--data", str(tmp_path)],
            "--temperature", "finite")
    refused(["infer", "--repeat", "1000000", "--params", params, "--data", str(tmp_path)],
            "--repeat", "100")
