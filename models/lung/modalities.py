"""Which model versions get a lung share per scored image, and so carry heat maps in
their scoring call: X-ray versions (the lung segmenter is trained on chest X-rays). Read
when a version is loaded or exported, so it imports nothing heavy; a CT network without
the maps output scores about 9% faster on ONNX Runtime (bench/lung_share_cost.py note in
docs/models.md)."""

from __future__ import annotations

import json
from pathlib import Path

SHARE_MODALITIES = ("xray",)


def maps_wanted(folder: Path | str | None) -> bool:
    """Whether the version at `folder` should return heat maps with its scores: its card
    names a modality with lung shares, or it has no card saying otherwise (a bare model
    folder keeps the maps, which cost little)."""
    if folder is None:
        return True
    try:
        modality = json.loads((Path(folder) / "card.json").read_text()).get("modality")
    except (OSError, ValueError):
        return True
    return modality is None or modality in SHARE_MODALITIES
