"""Champion against challenger: promote a retrained model only when it is better.

Both versions score the same held-back patients (the challenger's test split), each at
its own threshold. The challenger wins when its AUC beats the champion's by at least
`margin` and its sensitivity is not lower: for a screening tool, trading missed cases
for a better curve elsewhere is not an improvement. The champion may have seen some of
these patients in its own training (the base data), which favours it: the gate errs
towards keeping what works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.dataset import Example, split_groups


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def evaluate_version(
    folder: Path, temperature: float, threshold: float, examples: list[Example]
) -> dict:
    """AUC (with a patient-bootstrap interval), sensitivity and specificity of a saved
    version on labelled examples."""
    from models.metrics import screening_report
    from models.predictor import Predictor
    from models.preprocess import load_for_model

    predictor = Predictor(folder, batch_size=32, temperature=temperature)
    x = np.stack([load_for_model(ex.path, predictor.input_size) for ex in examples])
    y = np.asarray([ex.label for ex in examples])
    return screening_report(y, predictor.predict(x), threshold, groups=split_groups(examples))


def decide(champion: dict | None, challenger: dict, margin: float) -> Decision:
    if champion is None:
        return Decision(True, "no active model to compare with")
    c_auc, h_auc = champion["auc"], challenger["auc"]
    c_sens, h_sens = champion["sensitivity"], challenger["sensitivity"]
    if h_auc is None or c_auc is None:
        return Decision(False, "AUC undefined on the held-back patients (one label only)")
    figures = (
        f"challenger AUC {h_auc:.3f}, sensitivity {h_sens:.3f}; champion AUC {c_auc:.3f}, "
        f"sensitivity {c_sens:.3f}; margin {margin:.3f}"
    )
    if h_auc < c_auc + margin:
        return Decision(False, f"AUC not better by the margin: {figures}")
    if h_sens < c_sens:
        return Decision(False, f"sensitivity would drop: {figures}")
    return Decision(True, f"better: {figures}")
