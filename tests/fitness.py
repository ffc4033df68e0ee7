"""What the fitness tests read of the production code: the words of its *code* (identifiers and
string literals), not its prose (docstrings and comments), so a rule like "only the registry names
a backend" counts uses, not explanations. Shared by tests/backends/test_registry_fitness.py and
tests/ablations/test_registry.py."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = ("emoface", "flows", "tasks", "schemas")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)):
            out.add(id(body[0].value))
    return out


def string_literals(tree: ast.AST) -> Iterator[str]:
    """Every string constant of code (f-strings' literal parts included), docstrings left out."""
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            yield node.value


def identifiers(tree: ast.AST) -> Iterator[str]:
    """Every name code uses or defines: variables, attributes, imports, functions, arguments."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
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


def code_words(tree: ast.AST) -> Iterator[str]:
    """Identifiers and string literals (no docstrings; comments never reach the AST)."""
    yield from string_literals(tree)
    yield from identifiers(tree)


def word(name: str) -> re.Pattern[str]:
    """``name`` as a word of code, any case: ``ollama``, ``OLLAMA_HOST``, ``inference.ollama``."""
    return re.compile(rf"(?i)(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])")


def production_files_where(uses: Callable[[ast.AST], bool]) -> set[str]:
    """The production files (repo-relative) whose syntax tree ``uses``."""
    out = set()
    for folder in PRODUCTION:
        for path in (REPO / folder).rglob("*.py"):
            if uses(ast.parse(path.read_text(encoding="utf-8"))):
                out.add(path.relative_to(REPO).as_posix())
    return out
