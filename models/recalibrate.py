"""The `recalibrate` recipe: a model version's weights unchanged, its temperature and
threshold refitted on the site's confirmed labels.

A model's scores rank the site's scans as well as they do (recalibration cannot change
the AUC), but a new scanner or patient mix can shift them so that the card's threshold
no longer gives the card's sensitivity, and a probability of 0.8 no longer means 80%.
Both are refitted from the probabilities the version already stored for the confirmed
results, so nothing is scored again and no TensorFlow is needed.

The confirmed labels are split by patient into a fitting half and a held-back half
(stratified, models.dataset.grouped_folds); the held-back half is where the new version
and its parent are compared by the champion/challenger gate (models.gate.decide), each
at its own threshold. Too few labels, or too few of either class on either side, is
refused with the reason before anything is queued and again in the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import calibration, metrics
from models.dataset import Example, grouped_folds

NAME = "recalibrate"
# Each half of the split needs at least this many images of each class.
MIN_PER_CLASS_PER_HALF = 2


class Refused(ValueError):
    """A recalibration that cannot be done; the message says why, `code` names the
    case (too_few_labels, one_class_only, too_few_patients)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Label:
    """A confirmed result: the probability the parent stored, the reviewer's label."""

    probability: float
    label: int  # 1 covid
    patient: str
    sha256: str | None = None


def check(labels: Sequence[Label], minimum: int) -> None:
    """Refuse unless there are `minimum` confirmed labels with a score, some of each."""
    n = len(labels)
    pos = sum(x.label for x in labels)
    if n < minimum:
        raise Refused(
            "too_few_labels",
            f"recalibration needs at least {minimum} confirmed labels with a score under the "
            f"active version (SCANQ_RECALIBRATE_MIN); there are {n} ({pos} covid, "
            f"{n - pos} non-covid). Confirm more results on their pages first.",
        )
    if pos == 0 or pos == n:
        only = "covid" if pos else "non-covid"
        raise Refused(
            "one_class_only",
            f"all {n} confirmed labels are {only}: recalibration needs confirmed cases of "
            "both classes to set a threshold",
        )


def split(labels: Sequence[Label], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fitting, held-back) indices, whole patients on one side, classes balanced."""
    examples = [Example(Path(str(k)), x.label, x.patient) for k, x in enumerate(labels)]
    fit, held = grouped_folds(examples, 2, seed)
    y = np.asarray([x.label for x in labels])
    for name, part in (("fitting", fit), ("held-back", held)):
        pos = int(y[part].sum())
        if min(pos, len(part) - pos) < MIN_PER_CLASS_PER_HALF:
            raise Refused(
                "too_few_patients",
                f"split by patient, the {name} half has {pos} covid and {len(part) - pos} "
                f"non-covid images: each half needs {MIN_PER_CLASS_PER_HALF} of each. "
                "Confirm more results of the rarer class, from more patients.",
            )
    return fit, held


def raw(probabilities: Sequence[float], temperature: float) -> np.ndarray:
    """The model's own probabilities, before the version's temperature."""
    return calibration.apply_temperature(np.asarray(probabilities), 1.0 / float(temperature))


def refit(
    y: np.ndarray, p_stored: np.ndarray, temperature: float, target_sensitivity: float
) -> tuple[float, float]:
    """(temperature, threshold) fitted on the fitting half, as training fits them on
    validation: temperature by likelihood, then the threshold for the sensitivity."""
    p_raw = raw(p_stored, temperature)
    new_t = calibration.fit_temperature(y, p_raw)
    p_new = calibration.apply_temperature(p_raw, new_t)
    return new_t, metrics.threshold_for_sensitivity(y, p_new, target_sensitivity)


def rescore(p_stored: Sequence[float], old_t: float, new_t: float) -> np.ndarray:
    return calibration.apply_temperature(raw(p_stored, old_t), new_t)


def report(y: np.ndarray, p: np.ndarray, threshold: float, groups: list[str]) -> dict:
    r = metrics.screening_report(y, p, threshold, groups=groups)
    r["ece"] = round(calibration.expected_calibration_error(y, p), 4)
    return r


def fit_refused(cfg, *args, **kwargs):
    """The recipe table's fit: recalibration fits no images (worker.recalibration runs
    it from stored scores), so reaching this is a bug, said plainly."""
    raise ValueError("recipe=recalibrate fits no images; worker.recalibration runs it")
