"""Batched inference with one saved model version.

The model is called through a `tf.function` with a fixed batch shape: partial batches
are padded, so the graph is traced once per process and never again. With `streams` >
1 that many calls run at once from a small thread pool (TensorFlow releases the GIL in
its kernels; see models.batching for what it buys on a CPU). Probabilities are
temperature-calibrated with the version's stored temperature. The same call returns the
pooled features the out-of-distribution check needs (`models.ood`), so that check costs
no second pass through the network.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.calibration import apply_temperature
from models.ood import OODModel, Verdict, judge, with_features


class Predictor:
    def __init__(
        self,
        model_path: Path | str,
        batch_size: int = 32,
        temperature: float = 1.0,
        streams: int = 1,
    ):
        import keras
        import tensorflow as tf

        import models.layers  # noqa: F401 - registers the layers saved models may hold

        path = Path(model_path)
        folder = path if path.is_dir() else path.parent
        if path.is_dir():
            path = path / "model.keras"
        self.model = keras.models.load_model(path, compile=False)
        self.input_size = int(self.model.input_shape[1])
        self.batch_size = batch_size
        self.temperature = temperature
        # None for versions trained before out-of-distribution calibration existed.
        self.ood: OODModel | None = OODModel.load(folder)
        net = with_features(self.model)
        spec = tf.TensorSpec((batch_size, self.input_size, self.input_size, 1), tf.float32)
        self._call = tf.function(lambda x: net(x, training=False), input_signature=[spec])
        # Created here, in the process that uses it: never inherited across a fork.
        self._pool = (
            ThreadPoolExecutor(streams, thread_name_prefix="model") if streams > 1 else None
        )

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 1) float32 in 0..255 -> calibrated P(covid) (N,), features (N, D)."""
        n = len(images)
        if n == 0:
            return np.zeros(0, dtype=np.float64), np.zeros((0, 0), dtype=np.float32)
        chunks = [images[start : start + self.batch_size] for start in range(0, n, self.batch_size)]
        if self._pool is not None and len(chunks) > 1:
            outputs = list(self._pool.map(self._padded_call, chunks))  # keeps the order
        else:
            outputs = [self._padded_call(chunk) for chunk in chunks]
        probs = np.concatenate([p for p, _f in outputs])
        return apply_temperature(probs, self.temperature), np.concatenate([f for _p, f in outputs])

    def _padded_call(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = len(chunk)
        if keep < self.batch_size:
            pad = np.zeros((self.batch_size - keep, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        p, f = self._call(chunk)
        # Features come as float16 under mixed precision.
        return np.asarray(p).reshape(-1)[:keep], np.asarray(f, dtype=np.float32)[:keep]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 1) float32 in 0..255 -> (N,) calibrated P(covid)."""
        return self.predict_with_features(images)[0]

    def predict_and_judge(self, images: np.ndarray) -> tuple[np.ndarray, list[Verdict]]:
        """Probabilities and each image's out-of-distribution verdict."""
        probs, feats = self.predict_with_features(images)
        return probs, judge(self.ood, images, feats)
