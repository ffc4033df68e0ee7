"""Where things live on disk. Every output path is derived here, from one data root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
        return StimulusSetPaths(self.stimuli_root / name)
