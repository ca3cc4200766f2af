"""The record of a version's ONNX export (models.export_onnx), beside its model.keras:
what it was made from (the model file's fingerprint), how to prepare its inputs, and
how its check against TensorFlow came out. Read by every process that loads a version,
so it imports neither TensorFlow nor ONNX Runtime."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from models.pixel_views import Step, View

ONNX_FILE = "model.onnx"
RECORD_FILE = "model.onnx.json"


def fingerprint(folder: Path) -> str:
    """SHA-256 of the version's model.keras: what an export was made from."""
    h = hashlib.sha256()
    with open(Path(folder) / "model.keras", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_record(folder: Path) -> dict | None:
    """The export record of the version's current model.keras, or None (no export yet,
    or one made from another model file)."""
    path = Path(folder) / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("model_fingerprint") != fingerprint(folder):
        return None
    if record.get("status") == "ok" and not (Path(folder) / ONNX_FILE).exists():
        return None
    return record


def views_of(record: dict) -> tuple[View, ...]:
    return tuple(tuple(Step(kind, tuple(args)) for kind, args in v) for v in record["views"])


def card_entry(record: dict) -> dict:
    """What a model card keeps of an export record."""
    keep = ("status", "reason", "format", "opset", "model_fingerprint", "check", "views_readable")
    return {k: record[k] for k in keep if k in record}
