"""What every training recipe's fit returns, and the callbacks it is given.

A recipe (models.recipes) turns training and validation arrays into a Keras model;
`models.train` then calibrates, picks the threshold and scores the test patients the
same way whatever the recipe, so all it needs from a fit is a `Fitted`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

# progress(step, logs): a run reports each epoch (or each probe strength) as a step.
ProgressFn = Callable[[int, dict], None]
# should_stop(): True once the run was cancelled; checked between steps.
StopFn = Callable[[], bool]


class Fitted(NamedTuple):
    """What a recipe's fit returns. `val_scores` are validation probabilities from a
    model that never trained on the validation patients: the temperature, the threshold
    and the validation report rest on them, even when `model` itself has seen them
    (a probe refitted on training + validation)."""

    model: object
    history: dict
    pretrained: bool
    val_scores: np.ndarray


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """A Keras model's probabilities for a stack of model inputs, as a flat array."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0)).reshape(-1)
