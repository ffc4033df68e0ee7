"""Where things live on disk. Every output path is derived here, from one data root."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from emoface.errors import DataError

#: stimulus set names (and every other name in params.yaml): a folder name that cannot escape data/
SET_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
#: ... of at most this many characters (a folder name every file system takes, with room for
#: the temporary-file prefix and suffix)
SET_NAME_MAX = 64
#: longest file or folder name (one path component) in bytes on Linux and macOS file systems
NAME_MAX_BYTES = 255


# each ablation's DVC metrics file beside its metrics.json (emoface/analysis/headline.py)
HEADLINE_FILE = "headline.json"

def check_set_name(name: str, *, field: str = "NAME") -> str:
    """Return ``name`` if it is a valid stimulus set name, else raise DataError naming it."""
    if isinstance(name, str) and len(name) > SET_NAME_MAX:
        raise DataError(f"stimulus set name of {len(name)} characters is too long: at most "
                        f"{SET_NAME_MAX}", field=field)
    if not isinstance(name, str) or re.fullmatch(SET_NAME_PATTERN, name) is None:
        raise DataError(f"stimulus set name {name!r} is not allowed: use lowercase letters, digits "
                        "and _, starting with a letter (e.g. my_faces)", field=field)
    return name


def check_data_root(root: Path, *, field: str = "--data") -> Path:
    """Return ``root`` if it can be the data folder: an existing folder, or a path that can be
    created as one (every existing part of it a folder, no name too long). Raises DataError
    naming ``field`` otherwise (a file, /dev/null, a name over 255 bytes)."""
    root = Path(root)
    for part in root.parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
            raise DataError(f"{field} {str(root)[:60]}...: a folder name in this path is longer "
                            f"than {NAME_MAX_BYTES} bytes; choose a shorter data folder")
    probe = root
    while True:
        try:
            if probe.is_dir():
                break
            if probe.exists() or probe.is_symlink():
                what = "it" if probe == root else f"its parent {probe}"
                raise DataError(f"{field} {root}: {what} exists and is not a folder (a file, "
                                "device or broken link); give a folder")
        except OSError as err:
            raise DataError(f"{field} {root}: cannot be used as the data folder "
                            f"({err.strerror})") from None
        if probe.parent == probe:
            break
        probe = probe.parent
    return root


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
