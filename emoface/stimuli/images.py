"""Checking one image a researcher gives us before it becomes a stimulus.

* The path is resolved (symbolic links followed) and must stay inside the images folder.
* The image must decode completely, be at least ``MIN_SIDE`` pixels on each side, hold at most
  ``max_pixels`` pixels (checked from the header, before decoding: no decompression bomb), and have
  one frame (an animated GIF/PNG/WebP is refused: save the frame you mean as a PNG).
* Only regular files are read: a named pipe (FIFO), a device or a socket is refused without being
  waited on (the file is opened non-blocking and checked before anything is read).
* 8-bit RGB and grayscale (``L``) files are kept byte for byte. Any other mode (CMYK, 16-bit,
  float, palette, alpha, 1-bit) is converted to 8-bit RGB PNG for the backends: alpha is
  composited over white, 16-bit values are scaled to 0-255, float values in 0-1 too (NaN or
  infinite values are refused). The original mode is recorded by the
  caller.
* An EXIF orientation other than 1 (a photo taken sideways) is applied, as an image viewer shows
  it (and as the human raters saw it); model servers read the pixels and ignore EXIF, so the
  image is stored upright as an RGB PNG and the orientation is recorded by the caller.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emoface.errors import DataError

MIN_SIDE = 16
KEPT_MODES = ("RGB", "L")


@dataclass(frozen=True)
class CheckedImage:
    """An image ready to copy into a stimulus set."""

    data: bytes  # the bytes to store (the original file, or the RGB PNG it was converted to)
    suffix: str  # ".png" when converted, else the original suffix (lower case)
    size: tuple[int, int]
    original_mode: str
    converted: bool
    orientation: int = 1  # the EXIF orientation applied (1 = none: stored as taken)


def resolve_inside(folder: Path, rel: str | Path, *, file: Path, row: int,
                   field: str = "file") -> Path:
    """``folder / rel`` with symbolic links resolved; refused when it lands outside ``folder``."""
    path = folder / rel
    real, base = path.resolve(), folder.resolve()
    if real != base and base not in real.parents:
        raise DataError(f"{path} resolves to {real}, outside the images folder {base} (a symbolic "
                        "link?); copy the image into the folder instead", file=file, row=row,
                        field=field)
    return path


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grayscale
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max(initial=0)
        if mode == "F" and not np.isfinite(arr).all():
            raise ValueError("a float image holding NaN or infinite values")
        if mode == "F" and hi <= 1.0:
            scale = 1 / 255  # float images usually hold 0-1
        else:
            scale = 257.0 if mode.startswith("I;16") or hi > 255 else 1.0
        gray = np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1-8; 1 when absent or unreadable)."""
    try:
        value = int(im.getexif().get(0x0112, 1))
    except (TypeError, ValueError, OSError, SyntaxError):
        return 1
    return value if 1 <= value <= 8 else 1


def _open_regular(path: Path, bad):
    """``path`` opened for reading without blocking (a FIFO with no writer would block a plain
    open forever), refused unless it is a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:
        raise bad("is a folder, not an image file") from None
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            what = ("a named pipe (FIFO)" if stat.S_ISFIFO(kind) else "a device"
                    if stat.S_ISCHR(kind) or stat.S_ISBLK(kind) else "a socket"
                    if stat.S_ISSOCK(kind) else "a folder" if stat.S_ISDIR(kind)
                    else "not a regular file")
            raise bad(f"is {what}, not an image file; only regular files are imported")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_image(path: Path, *, max_pixels: int, file: Path, row: int,
                field: str = "file") -> CheckedImage:
    """Validate (and where needed convert) the image at ``path``; errors name file, row, field."""
    def bad(message: str) -> DataError:
        return DataError(f"image {path}: {message}", file=file, row=row, field=field)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open_regular(path, bad) as fh, Image.open(fh) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise bad(f"{w} x {h} = {w * h / 1e6:.1f} megapixels is over the limit of "
                              f"{max_pixels / 1e6:.1f} (stimuli.max_image_pixels); downscale it")
                if min(w, h) < MIN_SIDE:
                    raise bad(f"{w} x {h} pixels is too small (at least {MIN_SIDE} x {MIN_SIDE})")
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    raise bad(f"animated image ({frames} frames); save the frame you mean as a "
                              "PNG and import that")
                im.load()
                mode = im.mode
                orientation = _orientation(im)
                if mode in KEPT_MODES and orientation == 1:
                    fh.seek(0)
                    return CheckedImage(fh.read(), path.suffix.lower(), (w, h), mode, False)
                upright = ImageOps.exif_transpose(im) if orientation != 1 else im
                buf = io.BytesIO()
                _to_rgb(upright).save(buf, format="PNG")
                return CheckedImage(buf.getvalue(), ".png", upright.size, mode, True, orientation)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}", file=file, row=row, field=field) from None
    except Image.DecompressionBombError:  # PIL refuses to even open it (> 2 x its own limit)
        raise bad(f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.1f} megapixels, over the "
                  f"limit of {max_pixels / 1e6:.1f} (stimuli.max_image_pixels); downscale it"
                  ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise bad(f"cannot be read ({err})") from None
