"""Fitness: each server backend is named in at most two production files, its module and its
registry line (``emoface/backends/__init__.py``), as each ablation is named only in its module
and the ablation registry.

"Named" = an identifier or a string literal of code (docstrings and comments are prose and do not
count) contains the backend's name as a word: ``ollama``, ``OLLAMA_HOST``, ``inference.ollama``.

Explicit allow-list (what is left):

* ``emoface/config.py`` holds each backend's params section model (``inference.ollama``,
  ``inference.openai``): the params models are static pydantic classes that other sections'
  validation lives beside; moving them into the backend modules (built from the registry as the
  ablations' sections are) is left to the config/scheduler refactor.
* ``flows/ablations.py`` names Ollama in the ``--dask`` help text ("run Ollama/MLX inference
  batches ..."); its argument parsing is being rewritten separately.
* ``emoface/results/export.py`` names Ollama in its codebook's prose ("e.g. ollama/gemma3:4b",
  "simulated, ollama, mlx, fer"); the list of backends there should come from the registry.

The in-process backends (simulated, fer, mlx) are not held to the rule yet: "simulated" is a
column and a report flag across the analyses, A7 and the baseline tables name the FER classifier,
and A4 and A9 name mlx for their self-quantized arm and hidden states (the scheduler refactor,
issue 20 item 1, and the baseline-as-an-ablation change remove those).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = ("emoface", "flows", "tasks", "schemas")
REGISTRY = "emoface/backends/__init__.py"
ALLOWED = {
    "ollama": {"emoface/backends/ollama.py", REGISTRY, "emoface/config.py", "flows/ablations.py",
               "emoface/results/export.py"},
    "openai": {"emoface/backends/openai_compat.py", REGISTRY, "emoface/config.py"},
}


def _code_words(tree: ast.AST):
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)):
            docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node.value
        elif isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, ast.alias):
            yield node.name
            yield node.asname or ""
        elif isinstance(node, ast.ImportFrom):
            yield node.module or ""
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, ast.arg):
            yield node.arg


def files_naming(backend: str) -> set[str]:
    word = re.compile(rf"(?i)(?<![a-z0-9]){re.escape(backend)}(?![a-z0-9])")
    out = set()
    for folder in PRODUCTION:
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(word.search(w) for w in _code_words(tree)):
                out.add(path.relative_to(REPO).as_posix())
    return out


def test_the_detector_sees_code_and_ignores_prose(tmp_path):
    tree = ast.parse('"""Ollama, in prose."""\nimport os\nx = os.environ["OLLAMA_HOST"]\n'
                     'def f():\n    """ollama again"""\n    return inference.ollama\n')
    words = list(_code_words(tree))
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
