"""Turn an uploaded image file into the array a model takes.

One function serves training, evaluation and the worker, so a model never sees pixels
prepared differently from those it was trained on. Models take a single grayscale
channel in the 0..255 range at a square size; backbone-specific scaling happens inside
the saved model (see `models.backbones`), which keeps the saved file self-describing.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Pillow refuses larger images with DecompressionBombError (a clear per-file error).
MAX_PIXELS = 100_000_000
MIN_SIDE = 16
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """A file that cannot be used as a scan; the message is shown to the user."""


def decode_grayscale(data: bytes | Path | str) -> np.ndarray:
    """Decode any Pillow-readable image into an 8-bit grayscale array (H, W).

    16-bit and float images are windowed to their own min..max rather than truncated,
    so a 12-bit radiograph stored in a 16-bit PNG is not rendered nearly black.
    """
    try:
        raw = data if isinstance(data, bytes) else Path(data).read_bytes()
        with Image.open(io.BytesIO(raw)) as im:
            # Sizes from the header, before any pixel is decoded (exif_transpose decodes):
            # atheris found a 73-byte bitmap of 125,435,904 x 1 px that took 13 s to
            # decode only to be refused for its size.
            if im.width < MIN_SIDE or im.height < MIN_SIDE:
                raise ImageError(
                    f"image is {im.width}x{im.height} px; at least {MIN_SIDE}x{MIN_SIDE} is needed"
                )
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"image is {im.width}x{im.height} px: over {MAX_PIXELS:,} pixels")
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(im, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                scale = 255.0 / (hi - lo) if hi > lo else 0.0
                return ((arr - lo) * scale).round().astype(np.uint8)
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(background, im)
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for damaged files: atheris found
        # a TIFF whose strip offset is a float, a TypeError deep in Pillow's loader
        raise ImageError(f"not a readable image: {exc}"[:300]) from exc


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W) uint8 to (size, size, 1) float32 in 0..255.

    The image is stretched rather than padded: padding bars differ by source and would
    hand the model a shortcut; stretching is the same for every image.
    """
    im = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float32)[..., None]


def load_for_model(data: bytes | Path | str, size: int) -> np.ndarray:
    """Decode and resize in one step: what the worker and `scanq evaluate` call."""
    return resize_square(decode_grayscale(data), size)
