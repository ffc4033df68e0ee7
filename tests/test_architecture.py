"""Fitness tests for the shape of the code (STYLE.md): the library imports no orchestration, and
no module of it imports itself back, not even through an import inside a function.

Imports are read from the source (every ``import`` statement, function bodies included; only
``if TYPE_CHECKING:`` blocks are left out, since they never run), so an import hidden inside a
function to dodge a cycle at load time still counts as the dependency it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "emoface"
ORCHESTRATION = ("prefect", "prefect_dask", "dask", "distributed")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str | None = None) -> list[tuple[str, int]]:
    """(absolute module name, line) for every import in the file that can run."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    me = (module or _module_name(path)).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out += [(f"{module}.{a.name}", node.lineno) for a in node.names]
            out.append((module, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in LIBRARY.rglob("*.py")}

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in modules:
                return ".".join(parts)
            parts.pop()
        return None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, path in modules.items():
        for name, _ in _imports(path):
            target = resolve(name)
            if target is None or target == m or m.startswith(target + "."):
                continue  # itself, or its own package (already being imported)
            graph[m].add(target)
            # importing a.b.c runs a/__init__ and a/b/__init__ first (not for a's own submodules)
            parts = target.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in graph and not m.startswith(parent + "."):
                    graph[m].add(parent)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_library_imports_no_orchestration():
    offenders = [f"{p.relative_to(REPO)}:{line}: {name}"
                 for p in sorted(LIBRARY.rglob("*.py")) for name, line in _imports(p)
                 if name.split(".")[0] in ORCHESTRATION]
    assert not offenders, "emoface/ must not import Prefect or Dask (wire them in flows/, tasks/):\n" \
        + "\n".join(offenders)


def test_the_detector_sees_a_cycle_hidden_in_a_function(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.hidden\n"
                   "def f():\n    from emoface.config import Params\n")
    names = [n for n, _ in _imports(src, "emoface.m")]
    assert "emoface.config.Params" in names and "x.hidden" not in names
def test_no_import_cycles_in_the_library():
    cycles = _cycles(_graph())
    graph = _graph()
    detail = ["; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c)
              for c in cycles]
    assert not cycles, "import cycles in emoface/:\n" + "\n".join(detail)
