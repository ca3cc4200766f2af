"""Dice and IoU of predicted lung masks, per image and summarised by group."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two boolean masks (1.0 when both are empty)."""
    p, t = pred.astype(bool), truth.astype(bool)
    inter, total, union = (p & t).sum(), p.sum() + t.sum(), (p | t).sum()
    if union == 0:
        return 1.0, 1.0
    return float(2 * inter / total), float(inter / union)


def summarise(scores: Sequence[tuple[float, float]], keys: Sequence[str]) -> dict:
    """{"all": {...}, key: {...}}: mean Dice and IoU, the 10th percentile Dice, n."""
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s, k in zip(scores, keys, strict=True):
        groups["all"].append(s)
        groups[k].append(s)

    def one(values: list[tuple[float, float]]) -> dict:
        d = np.array([v[0] for v in values])
        i = np.array([v[1] for v in values])
        return {"n": len(values), "dice": round(float(d.mean()), 4),
                "dice_p10": round(float(np.percentile(d, 10)), 4),
                "iou": round(float(i.mean()), 4)}  # fmt: skip

    return {k: one(v) for k, v in sorted(groups.items())}
