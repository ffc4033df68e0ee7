"""Where things live on disk. Every output path is derived here, from one data root."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from emoface.errors import DataError

#: stimulus set names (and every other name in params.yaml): a folder name that cannot escape data/
SET_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


# each ablation's DVC metrics file beside its metrics.json (emoface/analysis/headline.py)
HEADLINE_FILE = "headline.json"

def check_set_name(name: str, *, field: str = "NAME") -> str:
    """Return ``name`` if it is a valid stimulus set name, else raise DataError naming it."""
    if not isinstance(name, str) or re.fullmatch(SET_NAME_PATTERN, name) is None:
        raise DataError(f"stimulus set name {name!r} is not allowed: use lowercase letters, digits "
                        "and _, starting with a letter (e.g. my_faces)", field=field)
    return name


@dataclass(frozen=True)
class StimulusSetPaths:
    """Files of one stimulus set: ``data/stimuli/<name>/``."""

    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def norms(self) -> Path:
        return self.root / "norms.csv"

    @property
    def latents(self) -> Path:
        """Generator latents (synthetic sets only): what the simulated rater works from."""
        return self.root / "latents.parquet"


@dataclass(frozen=True)
class DataPaths:
    """The data folder (``data/`` in the repository)."""

    root: Path = Path("data")

    @property
    def stimuli_root(self) -> Path:
        return self.root / "stimuli"

    def stimulus_set(self, name: str) -> StimulusSetPaths:
        """``data/stimuli/<name>/``; a name that could leave that folder is refused."""
        return StimulusSetPaths(self.stimuli_root / check_set_name(name))
