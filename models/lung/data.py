"""The dev set's lung masks as training examples, split by patient.

Each row of `xray/lung_masks/masks.csv` is one (image, mask) pair; an image may carry two
masks (v7labs and lungVAE), and both are kept: they differ mostly behind the heart. The
split is made over images (patients joined by `dup_group`, models.dataset), so both masks
of an image, and every image of a patient, land on the same side.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.dataset import Example, load_examples, train_val_test
from models.preprocess import resize_square
from models.readers import decode_grayscale


@dataclass(frozen=True)
class MaskExample:
    image: Example
    mask: Path
    mask_source: str


def mask_examples(data: Path | str) -> list[MaskExample]:
    """Every (image, mask) pair of `<data>/xray/lung_masks/masks.csv`."""
    data = Path(data)
    folder = data / "xray" / "lung_masks"
    by_path = {ex.path.resolve(): ex for ex in load_examples(data, "xray")}
    out = []
    with open(folder / "masks.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            image = by_path.get((data / row["path"]).resolve())
            if image is None:
                continue
            out.append(MaskExample(image, folder / row["mask"], row["mask_source"]))
    if not out:
        raise FileNotFoundError(f"no lung masks under {folder}")
    return out


def split(pairs: list[MaskExample], seed: int = 0) -> dict[str, list[MaskExample]]:
    """train / val / test pairs, split by patient over the distinct images."""
    images = sorted({p.image for p in pairs}, key=lambda e: e.path.name)
    tr, va, te = train_val_test(images, seed=seed)
    side = {}
    for name, idx in (("train", tr), ("val", va), ("test", te)):
        side |= {images[i].path: name for i in idx}
    out: dict[str, list[MaskExample]] = {"train": [], "val": [], "test": []}
    for p in pairs:
        out[side[p.image.path]].append(p)
    return out


def load_mask(path: Path, size: int) -> np.ndarray:
    """(size, size) float32 0/1, stretched like the image (models.preprocess)."""
    im = Image.open(path).convert("L").resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(im, dtype=np.float32) >= 128).astype(np.float32)


def arrays(pairs: list[MaskExample], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size, 1) 0..255 and masks (N, size, size, 1) 0/1."""
    x = np.stack([resize_square(decode_grayscale(p.image.path), size) for p in pairs])
    y = np.stack([load_mask(p.mask, size) for p in pairs])[..., None]
    return x, y
