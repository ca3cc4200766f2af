"""The lung-field crop: an image cut to its segmented lungs' bounding box.

The box is widened by `margin` (a fraction of the image side) on every side and clipped
to the image, then the crop is stretched back to the image's size, as models.preprocess
stretches every image. An image whose mask is empty (no lungs found) is kept whole, so
the crop never drops a scan.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def lung_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the mask's bounding box widened by `margin`."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    dy, dx = round(margin * h), round(margin * w)
    return (max(0, rows[0] - dy), min(h, rows[-1] + 1 + dy),
            max(0, cols[0] - dx), min(w, cols[-1] + 1 + dx))  # fmt: skip


def crop_to_lungs(
    images: np.ndarray, masks: np.ndarray, margin: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks), each cut to its lung box and stretched back to (S, S)."""
    out_x, out_m = [], []
    for img, m in zip(images, masks, strict=True):
        box = lung_box(m, margin)
        if box is None:
            out_x.append(np.asarray(img, np.float32))
            out_m.append(m)
            continue
        t, b, left, r = box
        s = img.shape[0]
        part = Image.fromarray(np.asarray(img[t:b, left:r, 0], np.float32), mode="F")
        out_x.append(np.asarray(part.resize((s, s), Image.Resampling.BILINEAR))[..., None])
        mpart = Image.fromarray(m[t:b, left:r].astype(np.uint8) * 255, mode="L")
        out_m.append(np.asarray(mpart.resize((s, s), Image.Resampling.NEAREST)) >= 128)
    return np.stack(out_x).astype(np.float32), np.stack(out_m)
