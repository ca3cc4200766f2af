"""A version trained on lung fields (training option `lung_crop`): what it is fed, and
how its heat maps get back to the full image.

Such a version saw every training, validation and test image cut to its lung box
widened by the margin (models.lung.crop), the lungs found by the shipped segmenter on
the full image. Its card's config records the margin, and every path that feeds it
reads it from there and prepares pixels with this one class: training, scoring on
either runtime (models.predictor, the segmenter on the classifier's runtime), the ONNX
export's check, heat maps and the shortcut report. Heat maps come out in the cropped
frame; `map_back` puts them into the full image's, where the result page overlays them
and `lung_heat_share` compares them with the full image's lung mask.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.lung.crop import Box, crop_boxes, lung_boxes, map_back

# The training option (models.training_options) and the card config key that holds it.
OPTION = "lung_crop"


class NoSegmenter(RuntimeError):
    """A lung-crop version cannot be fed without the shipped lung segmenter."""


def margin_of(card: dict) -> float:
    """The lung-crop margin a version's card records (0.0: the version sees whole images)."""
    return float((card.get("config") or {}).get(OPTION) or 0.0)


def version_margin(folder: Path | str | None) -> float:
    """`margin_of` the card.json in `folder` (0.0 without a folder or a card)."""
    if folder is None:
        return 0.0
    try:
        card = json.loads((Path(folder) / "card.json").read_text())
    except (OSError, ValueError):
        return 0.0
    return margin_of(card)


@dataclass(frozen=True)
class LungField:
    """The lung-field crop of one version: its margin, and the runtime its segmenter
    runs on (the classifier's)."""

    margin: float
    runtime: str = "tensorflow"

    def masks(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) boolean lung masks of the full images, by the shipped segmenter."""
        from models.lung.segmenter import shipped

        segmenter = shipped(runtime=self.runtime)
        if segmenter is None:
            raise NoSegmenter(
                "this version crops X-rays to their lungs and needs the shipped lung "
                "segmenter (models/default/lung; python -m models.lung.train)"
            )
        return segmenter.masks(images)

    def crop(
        self, images: np.ndarray, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[Box | None]]:
        """The images as the version was trained on them, and each one's box; `masks`
        are the full images' lung masks when the caller has them already."""
        images = np.asarray(images, np.float32)
        if masks is None:
            masks = self.masks(images)
        boxes = lung_boxes(masks, self.margin)
        return crop_boxes(images, boxes), boxes

    def explaining(self, explain_batch: Callable) -> Callable:
        """`explain_batch` (models.gradcam.batch_explainer: images -> (probabilities,
        maps)) fed full images: they are cropped first and the maps put back into the
        full frame; takes the full images' lung masks as an optional second argument."""

        def explain(images: np.ndarray, masks: np.ndarray | None = None):
            cropped, boxes = self.crop(images, masks)
            probs, maps = explain_batch(cropped)
            return probs, map_back(maps, boxes, int(np.asarray(images).shape[1]))

        return explain


def for_version(folder: Path | str | None, runtime: str = "tensorflow") -> LungField | None:
    """The lung field of the version in `folder`, or None when it sees whole images."""
    margin = version_margin(folder)
    return LungField(margin, runtime) if margin else None


def as_trained(folder: Path | str, images: np.ndarray) -> np.ndarray:
    """Full images as the version in `folder` was trained on them (cropped to the lungs
    for a lung-crop version, else unchanged): what its export is checked on."""
    field = for_version(folder)
    return images if field is None else field.crop(images)[0]


def explainer_for(predictor) -> Callable:
    """The gradient heat maps of what a loaded version (a models.predictor predictor)
    scores, for full images: images[, masks] -> (probabilities, maps in the full frame)."""
    from models.gradcam import batch_explainer

    explain = batch_explainer(predictor.model)
    field = getattr(predictor, "lung_field", None)
    if field is None:
        return lambda images, masks=None: explain(images)
    return field.explaining(explain)
