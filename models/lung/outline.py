"""The segmented lungs' outline drawn over a picture of the image (the heat map), so a
reader sees where the lungs were taken to be when judging `lung_heat_share`."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from models.lung.segmenter import LungSegmenter
from models.preprocess import resize_square

OUTLINE_RGB = (255, 255, 255)


def lung_mask_at(gray: np.ndarray, segmenter: LungSegmenter) -> np.ndarray:
    """(H, W) boolean lung mask of a grey image at its own size."""
    h, w = gray.shape
    square = segmenter.masks(resize_square(gray, segmenter.size)[None])[0]
    im = Image.fromarray(square.astype(np.uint8) * 255, mode="L")
    return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR)) >= 128


def draw_outline(picture: Image.Image, mask: np.ndarray) -> Image.Image:
    """`picture` (RGB, the mask's size) with the mask's edge drawn over it."""
    width = max(1, round(min(mask.shape) / 200)) * 2 + 1  # odd, ~1% of the side
    im = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    inner = np.asarray(im.filter(ImageFilter.MinFilter(width))) >= 128
    edge = mask & ~inner
    out = np.array(picture.convert("RGB"))
    out[edge] = OUTLINE_RGB
    return Image.fromarray(out, mode="RGB")


def with_lung_outline(picture: Image.Image, gray: np.ndarray) -> Image.Image:
    """The heat-map picture of an X-ray with the shipped segmenter's lung outline over
    it (unchanged when no segmenter is shipped)."""
    from models.lung.segmenter import shipped

    segmenter = shipped()
    return picture if segmenter is None else draw_outline(picture, lung_mask_at(gray, segmenter))
