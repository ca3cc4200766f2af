"""The shipped lung segmenter, loaded lazily in the process that uses it.

`LungSegmenter.masks` takes the images the classifiers take ((N, S, S, 1) float32 0..255,
stretched square by models.preprocess) at any S and gives boolean lung masks at S.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

THRESHOLD = 0.5
WEIGHTS = "lung.keras"


def default_dir() -> Path:
    """models/default/lung beside the default classifiers (SCANQ_MODEL_DIR moves both)."""
    from scanq.settings import get_settings

    return Path(get_settings().model_dir) / "lung"


def two_lungs(mask: np.ndarray) -> np.ndarray:
    """The mask's two largest connected regions, dropping any under a tenth of the
    largest: the net marks the odd letter or marker outside the chest as lung (seen on
    the Actualmed contact sheet), and those blobs would count in every lung figure."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = [i + 1 for i in np.argsort(sizes)[::-1][:2] if sizes[i] >= 0.1 * sizes.max()]
    return np.isin(labels, keep)


class LungSegmenter:
    def __init__(self, folder: Path | str | None = None, batch_size: int = 32):
        import keras

        import models.layers  # noqa: F401 - registers HistogramEqualization

        self.folder = Path(folder) if folder else default_dir()
        self.model = keras.models.load_model(self.folder / WEIGHTS, compile=False)
        self.size = int(self.model.input_shape[1])
        self.batch_size = batch_size
        self._call = None

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, size, size) lung probabilities at the segmenter's own size."""
        import tensorflow as tf

        if self._call is None:
            spec = tf.TensorSpec((None, self.size, self.size, 1), tf.float32)
            self._call = tf.function(lambda x: self.model(x, training=False),
                                     input_signature=[spec])  # fmt: skip
        x = tf.image.resize(np.asarray(images, np.float32), (self.size, self.size))
        out = [
            self._call(x[i : i + self.batch_size]).numpy()
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(out)[..., 0] if out else np.zeros((0, self.size, self.size))

    def masks(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) boolean lung masks at the images' own size S."""
        import tensorflow as tf

        s = int(images.shape[1])
        probs = self.probabilities(images)
        kept = np.stack([two_lungs(p >= THRESHOLD) for p in probs]) if len(probs) else probs
        probs = np.where(kept, probs, 0.0)[..., None].astype(np.float32)
        return tf.image.resize(probs, (s, s)).numpy()[..., 0] >= THRESHOLD

    def card(self) -> dict:
        return json.loads((self.folder / "card.json").read_text())


_cache: dict[str, LungSegmenter] = {}


def shipped(folder: Path | str | None = None) -> LungSegmenter | None:
    """The segmenter of `folder` (default: the shipped one), loaded once per process;
    None when no segmenter file is there."""
    path = Path(folder) if folder else default_dir()
    if not (path / WEIGHTS).exists():
        return None
    key = str(path.resolve())
    if key not in _cache:
        _cache[key] = LungSegmenter(path)
    return _cache[key]
