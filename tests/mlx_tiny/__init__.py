"""Tiny, randomly initialised mlx-vlm models, one builder per architecture (no downloads).

Each builder writes a directory ``mlx_vlm.load`` accepts, in seconds: the architecture's real config
shape at tiny sizes, mlx-vlm's own model class with random weights, a small BPE tokenizer, the chat
template and processor configs. See :mod:`tests.mlx_tiny.common` for the two tokenizer variants and
the "answerer" nudge (the model answers one digit or one emotion word and ends its turn, the choice
still depending on the image).
"""

from __future__ import annotations

from pathlib import Path

from tests.mlx_tiny import gemma3, kimi_vl, mllama, qwen2_vl, smolvlm

BUILDERS = {"gemma3": gemma3.build, "mllama": mllama.build,
            "qwen2_vl": qwen2_vl.build,
            "smolvlm": smolvlm.build,
            "kimi_vl": kimi_vl.build}


def build_tiny(arch: str, path: Path, **kwargs) -> Path:
    return BUILDERS[arch](path, **kwargs)


def build_tiny_gemma3(path: Path, *, seed: int = 0, answerer: bool = True) -> Path:
    """The tiny Gemma3 with single-token digits (what the rest of the suite uses)."""
    return gemma3.build(path, seed=seed, answerer=answerer)


def cached_tiny(arch: str, root: Path, **kwargs) -> Path:
    """Build once per builder source and mlx-vlm version under ``root`` (the pytest cache when
    available); a half-written directory is never used (built aside, then renamed)."""
    import hashlib
    import shutil

    import mlx_vlm

    here = Path(__file__).parent
    h = hashlib.sha256(mlx_vlm.__version__.encode())
    for f in sorted(here.glob("*.py")):
        h.update(f.read_bytes())
    h.update(repr(sorted(kwargs.items())).encode())
    tag = "-".join(f"{v}" for _, v in sorted(kwargs.items()))
    final = root / f"{arch}-{tag}-{h.hexdigest()[:12]}"
    if (final / "model.safetensors").exists():
        return final
    work = root / f".{final.name}.building"
    shutil.rmtree(work, ignore_errors=True)
    build_tiny(arch, work, **kwargs)
    try:
        work.rename(final)
    except OSError:  # built concurrently by another session: use theirs
        shutil.rmtree(work, ignore_errors=True)
    return final
