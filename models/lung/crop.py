"""The lung-field crop: an image cut to its segmented lungs' bounding box, and a heat map
made on that crop put back where it came from.

The box is widened by `margin` (a fraction of the image side) on every side and clipped
to the image, then the crop is stretched back to the image's size, as models.preprocess
stretches every image. An image whose mask is empty (no lungs found) is kept whole, so
the crop never drops a scan. These are the only functions that cut pixels for a
lung-crop version (models.lung.field): training, both scoring runtimes, the export check
and the shortcut report all call `crop_boxes`, so no two paths prepare pixels apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# (top, bottom, left, right) in pixels of the full image; None: no lungs found, kept whole.
Box = tuple[int, int, int, int]


def lung_box(mask: np.ndarray, margin: float) -> Box | None:
    """(top, bottom, left, right) of the mask's bounding box widened by `margin`."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    dy, dx = round(margin * h), round(margin * w)
    return (int(max(0, rows[0] - dy)), int(min(h, rows[-1] + 1 + dy)),
            int(max(0, cols[0] - dx)), int(min(w, cols[-1] + 1 + dx)))  # fmt: skip


def lung_boxes(masks: np.ndarray, margin: float) -> list[Box | None]:
    """`lung_box` of each (S, S) mask."""
    return [lung_box(m, margin) for m in masks]


def crop_boxes(images: np.ndarray, boxes: Sequence[Box | None]) -> np.ndarray:
    """(N, S, S, 1) images, each cut to its box and stretched back to (S, S) (bilinear);
    an image without a box is returned as it is."""
    out = []
    for img, box in zip(images, boxes, strict=True):
        img = np.asarray(img, np.float32)
        if box is None:
            out.append(img)
            continue
        t, b, left, r = box
        part = Image.fromarray(np.ascontiguousarray(img[t:b, left:r, 0]), mode="F")
        size = (img.shape[1], img.shape[0])
        out.append(np.asarray(part.resize(size, Image.Resampling.BILINEAR))[..., None])
    if not out:
        return np.zeros((0, *images.shape[1:]), np.float32)
    return np.stack(out).astype(np.float32)


def crop_to_lungs(
    images: np.ndarray, masks: np.ndarray, margin: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks), each cut to its lung box and stretched back to (S, S)."""
    boxes = lung_boxes(masks, margin)
    out_m = []
    for m, box in zip(masks, boxes, strict=True):
        if box is None:
            out_m.append(m)
            continue
        t, b, left, r = box
        mpart = Image.fromarray(m[t:b, left:r].astype(np.uint8) * 255, mode="L")
        out_m.append(np.asarray(mpart.resize(m.shape[::-1], Image.Resampling.NEAREST)) >= 128)
    return crop_boxes(images, boxes), np.stack(out_m)


def map_back(maps: np.ndarray, boxes: Sequence[Box | None], size: int) -> np.ndarray:
    """Heat maps (N, h, w) in 0..1 made on cropped images -> (N, size, size) in the full
    image's frame: each map stretched onto its box (bilinear), zero outside it; a map
    of an image kept whole covers the whole frame."""
    out = np.zeros((len(maps), size, size), np.float32)
    for frame, cam, box in zip(out, np.asarray(maps, np.float32), boxes, strict=True):
        t, b, left, r = box if box is not None else (0, size, 0, size)
        part = Image.fromarray(np.ascontiguousarray(cam), mode="F")
        frame[t:b, left:r] = np.clip(
            np.asarray(part.resize((r - left, b - t), Image.Resampling.BILINEAR)), 0.0, 1.0
        )
    return out
