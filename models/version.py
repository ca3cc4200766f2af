"""A model version on disk: what training produced (`TrainResult`), written as a
version folder (`save_version`), and read back with the images and patient split it
was trained on (`reload_version`).

A version folder holds model.keras, card.json, MODEL_CARD.md, the card's report
images, ood.npz (the out-of-distribution calibration) and seen.json (what it trained
on, for models.gate). Whatever else every new version should carry is written at the
end of `save_version`, after the files above exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.card import render_card
from models.dataset import Example, load_examples, train_val_test
from models.decode import decode_examples


@dataclass
class TrainResult:
    model: object
    card: dict
    ood: object = None  # models.ood.OODModel, saved beside the model
    # The held-out patients' images: models.gate scores the champion on the same ones.
    test_examples: list[Example] = field(default_factory=list)
    # The training and validation images: what the version saw (models.gate.write_seen).
    seen_examples: list[Example] = field(default_factory=list)


def save_version(result: TrainResult, out: Path, command: str | None = None) -> Path:
    """Write model.keras, card.json, a human-readable MODEL_CARD.md and the record of
    what it saw (seen.json, for models.gate) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    # Saved without the augmentation layers' training behaviour mattering: they are
    # identity at inference.
    result.model.save(out / "model.keras")
    if result.ood is not None:
        result.ood.save(out)
    card = dict(result.card)
    if command:
        card["command"] = command
    write_card(out, card)
    from models.report import write_report_images

    write_report_images(card, out)
    if result.seen_examples:
        from models.gate import write_seen

        write_seen(out, result.seen_examples)
    # Last: the export for ONNX Runtime (CPU workers), checked on the validation images.
    from models.export_onnx import export_new_version

    split = card.get("split", {})
    entry = export_new_version(out, result.seen_examples, int(split.get("val", 0)),
                               float(card.get("temperature", 1.0)))  # fmt: skip
    if entry is not None:
        card["cpu_runtime"] = entry
        write_card(out, card)
    return out


def write_card(folder: Path, card: dict) -> None:
    """card.json and the MODEL_CARD.md rendered from it."""
    (folder / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (folder / "MODEL_CARD.md").write_text(render_card(card))


@dataclass
class ReloadedVersion:
    """A saved version with the images and patient split it was trained on."""

    card: dict
    model: object
    examples: list[Example]
    x: np.ndarray
    split: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def input_size(self) -> int:
        return int(self.card["input_size"])


def reload_version(folder: Path, data: Path | str) -> ReloadedVersion:
    """Load a saved version and re-derive its patient split from the seed in its card,
    for work on the same patients after training (out-of-distribution calibration,
    benchmarks). ValueError when the data no longer gives the split it was trained on."""
    import keras

    import models.layers  # noqa: F401 - registers the layers saved models may hold

    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text())
    examples, x, _ = decode_examples(load_examples(data, card["modality"]), int(card["input_size"]))
    split = train_val_test(examples, seed=card["split"]["seed"])
    if [len(part) for part in split] != [card["split"][p] for p in ("train", "val", "test")]:
        raise ValueError("the data no longer gives the split this version was trained on")
    model = keras.models.load_model(folder / "model.keras", compile=False)
    return ReloadedVersion(card, model, examples, x, split)
