"""A4's self-quantized arm: the FP16 weights quantized by the project with mlx-vlm's own conversion.

The plan's A4 compares Gemma3 FP16 with the 4-bit QAT release, which differs in training as well as
bit width. The second arm quantizes the FP16 directory itself (``mlx_vlm.convert``, affine
round-to-nearest, ``bits`` and ``group_size`` recorded), so FP16 vs this arm differs by quantization
alone. The quantized directory is made once per (FP16 weights digest, bits, group size) under
``data/models/quantized/`` and carries ``emoface_quantization.json`` (what it was made from, how,
with which versions), which the backend puts in its ModelInfo and every row's quantization field.

Model id of the arm: ``mlx/<fp16 model>@q<bits>-g<group_size>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from emoface.config import self_quantized_id

__all__ = ["PROVENANCE", "SelfQuantized", "ensure_quantized", "parse", "self_quantized_id",
           "weights_digest"]

SUFFIX = re.compile(r"^(?P<base>.+)@q(?P<bits>\d+)-g(?P<group>\d+)$")
PROVENANCE = "emoface_quantization.json"


@dataclass(frozen=True)
class SelfQuantized:
    base: str
    bits: int
    group_size: int


def weights_digest(path: Path) -> str:
    """sha256 over the weight files and config.json of a model directory (the MLX backend's model
    digest, and the source digest a self-quantized copy records)."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + [path / "config.json"]:
        if f.exists():
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
    return f"sha256:{h.hexdigest()}"


def parse(model: str) -> SelfQuantized | None:
    m = SUFFIX.match(model)
    return SelfQuantized(m["base"], int(m["bits"]), int(m["group"])) if m else None


def ensure_quantized(fp16_dir: Path, bits: int, group_size: int, root: Path) -> Path:
    """The quantized copy of ``fp16_dir`` under ``root`` (made once; reused while the FP16 weights
    are unchanged)."""
    import mlx
    import mlx_vlm
    from mlx_vlm import convert


    if not (fp16_dir / "config.json").exists():
        raise FileNotFoundError(f"{fp16_dir}: not a local model directory (config.json missing); "
                                "A4's self-quantized arm needs the FP16 weights on disk")
    digest = weights_digest(fp16_dir)
    out = root / f"{digest.removeprefix('sha256:')[:16]}-q{bits}-g{group_size}"
    if (out / PROVENANCE).exists():
        return out
    work = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # convert prints progress lines
        convert(str(fp16_dir), mlx_path=str(work), quantize=True, q_bits=bits,
                q_group_size=group_size)
    for extra in ("chat_template.jinja", "processor_config.json", "preprocessor_config.json"):
        if (fp16_dir / extra).exists() and not (work / extra).exists():
            shutil.copy2(fp16_dir / extra, work / extra)
    (work / PROVENANCE).write_text(json.dumps({
        "from": str(fp16_dir), "from_digest": digest, "bits": bits, "group_size": group_size,
        "method": "mlx_vlm.convert affine round-to-nearest",
        "mlx": mlx.core.__version__, "mlx_vlm": mlx_vlm.__version__,
    }, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return out
