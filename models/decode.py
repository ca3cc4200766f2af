"""Decode a labelled set's images into model inputs, once per training or reload."""

from __future__ import annotations

import numpy as np

from models.dataset import Example
from models.preprocess import ImageError, load_for_model


def load_arrays(examples: list[Example], size: int) -> np.ndarray:
    """Model inputs of every example; any unreadable image raises."""
    return np.stack([load_for_model(ex.path, size) for ex in examples])


def decode_examples(
    examples: list[Example], size: int
) -> tuple[list[Example], np.ndarray, list[dict]]:
    """Decode every image once; unreadable ones are left out and listed, so one broken
    file does not sink a training run."""
    kept, arrays, skipped = [], [], []
    for ex in examples:
        try:
            arrays.append(load_for_model(ex.path, size))
        except (ImageError, OSError) as exc:
            skipped.append({"file": ex.path.name, "error": str(exc)})
            continue
        kept.append(ex)
    if not arrays:
        raise ValueError("no readable image in the training set")
    return kept, np.stack(arrays), skipped
