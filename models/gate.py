"""Champion against challenger: promote a retrained model only when it is better.

Both versions score the same held-back patients (the challenger's test split), each at
its own threshold. The challenger wins when its AUC beats the champion's by at least
`margin` and its sensitivity is not lower: for a screening tool, trading missed cases
for a better curve elsewhere is not an improvement.

A retrained challenger usually splits the champion's own base data anew, so many of its
held-back patients were in the champion's training or validation set, and a champion
scored on images it was fitted to looks better than it is. Every version therefore
records what it saw (`seen.json`: hashes of its training and validation images' bytes,
patient ids and near-duplicate groups), and the two are compared on the held-back
patients the champion never saw. Only when too few of those remain is the comparison
made on all of them, favouring the champion, and the report says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.dataset import Example, split_groups

SEEN_FILE = "seen.json"
# Fewer unseen held-back patients than this (or one label only) is too small a test.
MIN_UNSEEN_PATIENTS = 20


def _patient_key(patient_id: str) -> str | None:
    # "image:<name>" is the default of a set without patient ids: one image, not a person.
    if patient_id.startswith("image:"):
        return None
    return hashlib.sha256(patient_id.encode()).hexdigest()[:20]


def _group_key(dup_group: str) -> str | None:
    return hashlib.sha256(dup_group.encode()).hexdigest()[:20] if dup_group else None


def _image_key(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_seen(folder: Path, examples: list[Example]) -> None:
    """Record, beside a version, the images and patients it was fitted or tuned on."""
    seen = {
        "images": sorted({_image_key(ex.path) for ex in examples}),
        "patients": sorted({k for ex in examples if (k := _patient_key(ex.patient_id))}),
        "dup_groups": sorted({k for ex in examples if (k := _group_key(ex.dup_group))}),
    }
    (Path(folder) / SEEN_FILE).write_text(json.dumps(seen) + "\n")


def unseen_by(folder: Path, examples: list[Example]) -> list[Example] | None:
    """The examples of patients the version at `folder` never saw, in order; None when
    it has no record of what it saw (a version older than the record)."""
    path = Path(folder) / SEEN_FILE
    if not path.exists():
        return None
    seen = json.loads(path.read_text())
    images, patients = set(seen["images"]), set(seen["patients"])
    dups = set(seen.get("dup_groups", ()))
    groups = split_groups(examples)  # patients joined by dup_group
    touched = {
        g for ex, g in zip(examples, groups, strict=True)
        if _image_key(ex.path) in images or _patient_key(ex.patient_id) in patients
        or _group_key(ex.dup_group) in dups
    }  # fmt: skip
    return [ex for ex, g in zip(examples, groups, strict=True) if g not in touched]


def comparison_set(
    champion_folder: Path | None, held_out: list[Example]
) -> tuple[list[Example], dict]:
    """The held-back examples to compare on, and what the report should say of them."""
    note = {"patients": len(set(split_groups(held_out))), "images": len(held_out)}
    unseen = unseen_by(champion_folder, held_out) if champion_folder else None
    if unseen is None:
        return held_out, {**note, "compared_on": "all held-back patients"}
    note["unseen_by_champion"] = {"patients": len(set(split_groups(unseen))),
                                  "images": len(unseen)}  # fmt: skip
    labels = {ex.label for ex in unseen}
    if note["unseen_by_champion"]["patients"] >= MIN_UNSEEN_PATIENTS and len(labels) == 2:
        return unseen, {**note, "compared_on": "held-back patients the champion never saw"}
    return held_out, {
        **note,
        "compared_on": "all held-back patients: too few that the champion never saw, "
        "so the champion is favoured",
    }


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
