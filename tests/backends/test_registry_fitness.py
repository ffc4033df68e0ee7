"""Fitness: each server backend is named in at most two production files, its module and its
registry line (``emoface/backends/__init__.py``), as each ablation is named only in its module
and the ablation registry.

"Named" = an identifier or a string literal of code (docstrings and comments are prose and do not
count) contains the backend's name as a word: ``ollama``, ``OLLAMA_HOST``, ``inference.ollama``.

"Named" is read by tests/fitness.py (shared with the ablation registry's test).

Explicit allow-list (what is left):

* ``emoface/config.py`` holds each backend's params section model (``inference.ollama``,
  ``inference.openai``). They stay there: a section model built from a backend's module would
  make ``emoface.config`` import that module (and with it its client library, ``ollama`` /
  ``openai``, whenever params are read), and the module's model would subclass config's base
  model, so config -> backend module -> config would be an import cycle (tests/test_architecture.py
  checks function-level imports too); params.yaml's shape stays as it is.

Help text and the export's codebook list the backends from the registry (``BACKENDS``, and
``CLUSTER_BACKENDS`` for ``--dask``), so they name none.

The in-process backends (simulated, fer, mlx) are not held to the rule yet: "simulated" is a
column and a report flag across the analyses, A7 and the baseline tables name the FER classifier,
and A4 and A9 name mlx for their self-quantized arm and hidden states.
"""

from __future__ import annotations

import ast

import pytest

from tests.fitness import code_words, production_files_where, word

REGISTRY = "emoface/backends/__init__.py"
ALLOWED = {
    "ollama": {"emoface/backends/ollama.py", REGISTRY, "emoface/config.py"},
    "openai": {"emoface/backends/openai_compat.py", REGISTRY, "emoface/config.py"},
}


def files_naming(backend: str) -> set[str]:
    pattern = word(backend)
    return production_files_where(lambda tree: any(pattern.search(w) for w in code_words(tree)))


def test_the_detector_sees_code_and_ignores_prose(tmp_path):
    tree = ast.parse('"""Ollama, in prose."""\nimport os\nx = os.environ["OLLAMA_HOST"]\n'
                     'def f():\n    """ollama again"""\n    return inference.ollama\n')
    words = list(code_words(tree))
    assert "OLLAMA_HOST" in words and "ollama" in words
    assert not any("prose" in w or "again" in w for w in words)


@pytest.mark.parametrize("backend", sorted(ALLOWED))
def test_a_server_backend_is_named_only_where_allowed(backend):
    named = files_naming(backend)
    assert f"emoface/backends/{'openai_compat' if backend == 'openai' else backend}.py" in named
    assert REGISTRY in named
    assert named <= ALLOWED[backend], sorted(named - ALLOWED[backend])


def test_the_registry_declares_what_the_rest_of_the_code_asks():
    from emoface.backends import BACKENDS, ModelRef
    from emoface.config import InferenceParams

    inference = InferenceParams()
    for name, spec in BACKENDS.items():
        assert spec.module.startswith("emoface.backends.")
        if spec.section is not None:
            assert hasattr(inference, spec.section), name
        for var, field in (spec.worker_env or {}).items():
            assert var.isupper() and field in type(getattr(inference, spec.section)).model_fields
    ref = ModelRef.parse("openai/Qwen/Qwen2.5-VL-7B-Instruct")
    assert (ref.backend, ref.name, ref.options) == ("openai", "Qwen/Qwen2.5-VL-7B-Instruct", ())
    assert ref.id == "openai/Qwen/Qwen2.5-VL-7B-Instruct"
    assert ModelRef.parse("mlx/models/g@q4-g64").options == ("q4", "g64")
    assert ModelRef.parse("ollama/a@b").options == ()  # only mlx ids carry options
