"""Images that are not chest scans, made on this machine without a network.

They measure the out-of-distribution flag (model cards, bench/ood.py, tests): the
photographs scikit-learn ships, rendered text and forms, noise, blank frames, and
rotated or inverted copies of real scans. Every set is deterministic for a seed, and
every image is an 8-bit grey (H, W) array as `models.preprocess.decode_grayscale` gives.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FORM_TEXT = (
    "patient name date of birth referral clinic signature consent form radiology report "
    "findings impression history ward bed number insurance address telephone please "
    "complete all fields in block capitals office use only total page of"
)


def photographs(n: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Crops of the two photographs in scikit-learn (a temple and a flower)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.fromarray(p).convert("L")) for p in load_sample_images().images]
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        h, w = p.shape
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append(p[y : y + side, x : x + side].copy())
    return out


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def text_pages(n: int = 16, seed: int = 0, size: int = 256) -> list[np.ndarray]:
    """Typed pages and forms: lines of words, some with boxes and rules, some inverted
    (white on black, as a scanned negative or a dark-mode screenshot)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = Image.new("L", (size, size), 255)
        draw = ImageDraw.Draw(im)
        font = _font(int(rng.integers(10, 20)))
        y = int(rng.integers(4, 20))
        form = i % 2 == 1
        while y < size - 16:
            words = " ".join(rng.choice(FORM_TEXT.split(), size=int(rng.integers(2, 7))))
            draw.text((8, y), words + (":" if form else ""), fill=0, font=font)
            if form:
                draw.rectangle((size // 2, y - 2, size - 8, y + 14), outline=0)
            y += int(rng.integers(16, 28))
        if form:
            draw.line((4, 4, size - 4, 4), fill=0, width=2)
        arr = np.asarray(im)
        out.append(255 - arr if i % 4 == 3 else arr)
    return out


def noise(n: int = 16, seed: int = 0, size: int = 224) -> list[np.ndarray]:
    """Uniform, Gaussian and smoothed noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a = rng.integers(0, 256, (size, size))
        elif kind == 1:
            a = np.clip(rng.normal(128, 40, (size, size)), 0, 255)
        else:
            small = rng.integers(0, 256, (size // 16, size // 16)).astype(np.uint8)
            a = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))
        out.append(np.asarray(a, dtype=np.uint8))
    return out


def blank(n: int = 8, size: int = 224) -> list[np.ndarray]:
    """Constant frames from black to white (what a failed export or a lens cap gives)."""
    return [np.full((size, size), int(v), np.uint8) for v in np.linspace(0, 255, n)]


def rotated(scans: list[np.ndarray]) -> list[np.ndarray]:
    """Real scans turned by 90 or 180 degrees, alternately."""
    return [np.rot90(s, 1 if i % 2 == 0 else 2).copy() for i, s in enumerate(scans)]


def inverted(scans: list[np.ndarray]) -> list[np.ndarray]:
    """Real scans with grey levels inverted (a MONOCHROME1 image read as MONOCHROME2)."""
    return [255 - s for s in scans]


SYNTHETIC: dict[str, Callable[[], list[np.ndarray]]] = {
    "photographs": photographs,
    "text_and_forms": text_pages,
    "noise": noise,
    "blank_frames": blank,
}


def png_bytes(gray: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, format="PNG")
    return buf.getvalue()
