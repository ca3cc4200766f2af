"""Batched inference with one saved model version.

The model is called through a `tf.function` with a fixed batch shape: partial batches
are padded, so the graph is traced once per process and never again. Probabilities are
temperature-calibrated with the version's stored temperature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.calibration import apply_temperature


class Predictor:
    def __init__(self, model_path: Path | str, batch_size: int = 32, temperature: float = 1.0):
        import keras
        import tensorflow as tf

        import models.layers  # noqa: F401 - registers the layers saved models may hold

        path = Path(model_path)
        if path.is_dir():
            path = path / "model.keras"
        self.model = keras.models.load_model(path, compile=False)
        self.input_size = int(self.model.input_shape[1])
        self.batch_size = batch_size
        self.temperature = temperature
        spec = tf.TensorSpec((batch_size, self.input_size, self.input_size, 1), tf.float32)
        self._call = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 1) float32 in 0..255 -> (N,) calibrated P(covid)."""
        n = len(images)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        out = []
        for start in range(0, n, self.batch_size):
            chunk = images[start : start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            probs = np.asarray(self._call(chunk)).reshape(-1)
            out.append(probs[: self.batch_size - pad])
        return apply_temperature(np.concatenate(out), self.temperature)
