"""Provenance: which code made a result, and code hashes that change with the code."""

from __future__ import annotations

import os
import re
import subprocess

from emoface.provenance import REPO_DIR, code_label, code_version, numerical_versions, source_hash


def test_source_hash_follows_content_not_timestamps(tmp_path):
    (tmp_path / "pkg").mkdir()
    a, b = tmp_path / "pkg" / "a.py", tmp_path / "pkg" / "b.py"
    a.write_text("X = 1\n")
    b.write_text("def f():\n    return 2\n")
    before = source_hash([tmp_path / "pkg"])
    os.utime(b, (1, 1))  # touched, not changed
    assert source_hash([tmp_path / "pkg"]) == before
    b.write_text("def f():\n    return 2\n# a comment\n")
    edited = source_hash([tmp_path / "pkg"])
    assert edited != before
    (tmp_path / "pkg" / "c.py").write_text("")
    assert source_hash([tmp_path / "pkg"]) not in (before, edited)  # a new module counts too


def test_code_version_names_the_checkout():
    v = code_version()
    head = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert v["git_commit"] == head and isinstance(v["git_dirty"], bool)
    assert re.fullmatch(r"emoface \S+ @ [0-9a-f]{12}( \(dirty\))?", code_label())


def test_numerical_versions_are_the_installed_ones():
    import numpy
    import polars
    import scipy

    v = numerical_versions()
    assert v["numpy"] == numpy.__version__ and v["scipy"] == scipy.__version__
    assert v["polars"] == polars.__version__
