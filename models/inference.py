"""What scoring asks of a loaded model version, whichever runtime runs it.

`models.predictor.Predictor` (TensorFlow) and `models.predictor.OnnxPredictor` (ONNX
Runtime) both satisfy it; the worker (worker.scoring, worker.runtime), the gate and the
tests' stand-ins are typed against this protocol instead of a concrete class.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from models.ood import Verdict


@runtime_checkable
class Predictor(Protocol):
    """A model version ready to score: images are (N, S, S, 1) float32 in 0..255 with
    S = `input_size`; probabilities are calibrated P(covid)."""

    input_size: int
    runtime: str  # "tensorflow" or "onnx"

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N,) probabilities."""
        ...

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) probabilities and (N, D) pooled features (for the out-of-distribution
        check), from one pass."""
        ...

    def predict_and_judge(self, images: np.ndarray) -> tuple[np.ndarray, list[Verdict]]:
        """Probabilities and each image's out-of-distribution verdict."""
        ...

    def predict_judge_and_map(
        self, images: np.ndarray, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[Verdict], np.ndarray | None]:
        """Probabilities, verdicts and each image's heat map in 0..1 ((N, h, w), in the
        image's frame), from one call; maps None when the network has no maps output.
        `masks` are the images' lung masks when the caller has them (models.lung)."""
        ...
