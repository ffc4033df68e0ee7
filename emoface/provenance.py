"""Which code and which library versions produced a result, and hashes of the code itself.

* :func:`code_version` — the package version plus the git commit of the checkout and whether it
  had uncommitted changes ("dirty"), so two results can always be told apart. Outside a git
  checkout (an installed wheel) the commit is ``"unknown"`` and ``dirty`` is ``None``.
* :func:`source_hash` — the content hash of source files, used in cache keys so that an edit to
  the code a result depends on invalidates it (as DVC hashes a stage's code dependencies).
* :func:`numerical_versions` — resolved versions of the packages that compute the numbers.

Nothing runs at import; results are memoised per process.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from emoface import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

# The packages whose versions can change a number in the report.
# (The model servers' client libraries are added from the backend registry: their
# ``client_package``.)
NUMERICAL_PACKAGES = ("numpy", "scipy", "statsmodels", "polars", "pandas", "pyarrow", "pandera",
                      "pingouin", "scikit-learn", "mlx", "mlx-vlm", "ai-edge-litert")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True,
                             timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


@functools.cache
def code_version() -> dict:
    """``{"package_version", "git_commit", "git_dirty"}`` of the running code."""
    commit = _git("rev-parse", "HEAD")
    if commit is None or not (REPO_DIR / "emoface").samefile(PACKAGE_DIR):
        return {"package_version": __version__, "git_commit": "unknown", "git_dirty": None}
    status = _git("status", "--porcelain", "--", ".")
    return {"package_version": __version__, "git_commit": commit.strip(),
            "git_dirty": bool(status and status.strip())}


def code_label(version: dict | None = None) -> str:
    """One readable string, e.g. ``emoface 0.1.0 @ 1a2b3c4d5e6f (dirty)``."""
    v = version or code_version()
    dirty = " (dirty)" if v["git_dirty"] else "" if v["git_dirty"] is not None else " (no git)"
    return f"emoface {v['package_version']} @ {v['git_commit'][:12]}{dirty}"


@functools.cache
def _file_digest(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_hash(paths: Iterable[Path]) -> str:
    """SHA-256 over the names (relative to the package) and contents of Python source files.

    A folder stands for every ``*.py`` below it. Names are relative, so the same code in two
    checkouts hashes the same; bytecode and data files are ignored.
    """
    files: set[Path] = set()
    for p in paths:
        p = Path(p)
        files.update(p.rglob("*.py") if p.is_dir() else [p])
    h = hashlib.sha256()
    for f in sorted(files):
        st = f.stat()
        name = f.resolve().relative_to(REPO_DIR) if f.resolve().is_relative_to(REPO_DIR) else f.name
        h.update(f"{Path(name).as_posix()}\0{_file_digest(f.resolve(), st.st_mtime_ns, st.st_size)}\0"
                 .encode())
    return h.hexdigest()


def inference_code_hash(backend: str) -> str:
    """The code that decides what a model is asked and how its answer is read: prompts, parser,
    logit handling, the backend interface and the named backend's module (from the registry)."""
    from emoface.backends import BACKENDS

    p = PACKAGE_DIR
    # a backend is a module or a package (mlx)
    module = p.parent.joinpath(*BACKENDS[backend].module.split("."))
    module = module if module.is_dir() else module.with_suffix(".py")
    return source_hash([p / "prompts.py", p / "parsing.py", p / "logits.py",
                        p / "backends" / "base.py", module])


def analysis_code_hash() -> str:
    """The code an analysis runs: the whole package (statistics, loaders, report) and schemas."""
    import schemas

    return source_hash([PACKAGE_DIR, Path(schemas.__file__).resolve().parent])


def numerical_versions() -> dict[str, str]:
    """Resolved versions of the installed numerical packages (absent ones are left out)."""
    from emoface.backends import BACKENDS

    clients = tuple(s.client_package for s in BACKENDS.values() if s.client_package)
    out = {}
    for name in (*NUMERICAL_PACKAGES, *clients):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
