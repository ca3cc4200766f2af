"""`lung_heat_share`: how much of a scored X-ray's heat map lies inside its lungs.

For every scored X-ray the worker takes the heat map of models.gradcam and the shipped
segmenter's lung mask, and stores the share of the map's mass inside the mask (0..1). A
share under one half means most of what raised or lowered the score lay outside the
lungs: text, borders, the shoulders. The map comes with the scores from the scoring call
itself (models.gradcam.maps_output, through TensorFlow or the ONNX export); only a model
whose network has no maps output (a head not linear in its pooled features, an export
made before maps existed) needs the second, gradient pass of `batch_explainer`. The
worker segments a batch once (`masks_for_scoring`) and hands the masks to the scoring
call too, which needs them for a version trained on lung fields (models.lung.field);
such a version's maps arrive already put back into the full image's frame.
"""

from __future__ import annotations

import logging

import numpy as np

from models.lung.segmenter import LungSegmenter, shipped

log = logging.getLogger(__name__)

# Below this share the result page warns that most of the heat lies outside the lungs.
WARN_BELOW = 0.5

_explainers: dict[int, object] = {}  # model id -> batch_explainer
_framed: dict[int, object] = {}  # model id -> models.lung.field.explainer_for


def heat_shares(maps: np.ndarray, masks: np.ndarray) -> list[float | None]:
    """Share of each (h, w) map's mass inside its (S, S) boolean mask (resized to the
    map's grid), or None for a map with no mass at all."""
    from PIL import Image

    out: list[float | None] = []
    for cam, mask in zip(maps, masks, strict=True):
        h, w = cam.shape
        if mask.shape != (h, w):
            m = Image.fromarray(mask.astype(np.float32), mode="F")
            # each cell of the map weighted by the share of its area inside the lungs
            mask = np.asarray(m.resize((w, h), Image.Resampling.BOX), dtype=np.float32)
        total = float(np.maximum(cam, 0).sum())
        inside = float((np.maximum(cam, 0) * mask).sum())
        out.append(None if total <= 0 else round(min(max(inside / total, 0.0), 1.0), 4))
    return out


def lung_heat_shares(
    model, images: np.ndarray, segmenter: LungSegmenter | None = None
) -> list[float | None]:
    """`lung_heat_share` of each image (N, S, S, 1) 0..255 under `model` (a saved
    classifier fed whole images whose heat map models.gradcam can make); all None when
    no segmenter is shipped."""
    from models.gradcam import batch_explainer

    segmenter = segmenter or shipped()
    if segmenter is None or len(images) == 0:
        return [None] * len(images)
    explain = _explainers.get(id(model))
    if explain is None:
        explain = _explainers[id(model)] = batch_explainer(model)
    _probs, maps = explain(images)
    return heat_shares(maps, segmenter.masks(images))


def masks_for_scoring(predictor, images: np.ndarray) -> np.ndarray | None:
    """The batch's lung masks by the shipped segmenter on the predictor's runtime, once
    for both the scoring call and the shares; None when there is no segmenter or it
    failed (the shares are then left empty; only a lung-crop version, which cannot be
    scored without its lungs, tries again in its scoring call and fails there)."""
    try:
        segmenter = shipped(runtime=getattr(predictor, "runtime", "tensorflow"))
        return None if segmenter is None or len(images) == 0 else segmenter.masks(images)
    except Exception:  # the score matters more than its explanation
        log.exception("lung segmenter failed for a batch of %d images", len(images))
        return None


def shares_for_scoring(
    predictor,
    images: np.ndarray,
    maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
) -> list[float | None]:
    """What worker.scoring stores as `lung_heat_share` for a batch of X-rays, from the
    heat `maps` the scoring call returned (`predict_judge_and_map`), else by the
    gradient pass, against the full images' lung `masks` (segmented here when not
    given): a failure here (a model whose heat map cannot be made, no segmenter) leaves
    the shares empty and never costs the batch its scores."""
    try:
        if masks is None:
            segmenter = shipped(runtime=getattr(predictor, "runtime", "tensorflow"))
            if segmenter is None:
                return [None] * len(images)
            masks = segmenter.masks(images)
        if maps is None:
            if getattr(predictor, "model", None) is None:
                return [None] * len(images)
            maps = _gradient_maps(predictor, images, masks)
        return heat_shares(maps, masks)
    except Exception:  # the score matters more than its explanation
        log.exception("lung_heat_share failed for a batch of %d images", len(images))
        return [None] * len(images)


def _gradient_maps(predictor, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Heat maps by the gradient pass (models.gradcam.batch_explainer) in the full
    images' frame, a lung-crop version's included (models.lung.field.explainer_for)."""
    from models.lung.field import explainer_for

    key = id(predictor.model)
    explain = _framed.get(key)
    if explain is None:
        explain = _framed[key] = explainer_for(predictor)
    return explain(images, masks)[1]


def warning(share: float | None) -> str | None:
    """The plain warning the result page shows, or None."""
    if share is None or share >= WARN_BELOW:
        return None
    return (
        f"most of the heat lies outside the lungs (only {share:.0%} inside): the score may "
        "come from text, borders or markers rather than from the lungs"
    )
