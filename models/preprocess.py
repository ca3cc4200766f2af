"""Turn an uploaded image file into the array a model takes.

One function serves training, evaluation and the worker, so a model never sees pixels
prepared differently from those it was trained on. Models take a single grayscale
channel in the 0..255 range at a square size; backbone-specific scaling happens inside
the saved model (see `models.backbones`), which keeps the saved file self-describing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Decoding (every format, the size rule) is the registry's (models.readers); these
# names stay here too, for the many callers that load model inputs.
from models.readers import ImageError, decode_grayscale

__all__ = ["ImageError", "decode_grayscale", "load_for_model", "resize_square"]


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
