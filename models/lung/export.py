"""The lung segmenter's ONNX export, so CPU workers segment with ONNX Runtime as they
score: `lung.onnx` beside `lung.keras`, with a record naming the fingerprint of the
lung.keras it came from (a retrained segmenter is never run by a stale export) and its
check against TensorFlow. Shipped with the segmenter; made again, with the same
converter as the classifiers (models.onnx_convert.convert), on the first batch a worker
segments when it is missing or stale, and kept only if its lung probabilities on that
batch stay within the tolerance of TensorFlow's. The shipped one was made (byte for
byte the same in any process) and checked on real dev X-rays by

    python -m models.lung.reexport --data ../shared/data
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# The segmenter's Keras file (models.lung.segmenter reads it by this name) and its export.
WEIGHTS = "lung.keras"
ONNX_FILE = "lung.onnx"
RECORD_FILE = "lung.onnx.json"
# Largest accepted difference of a lung probability (masks are cut at 0.5).
PROBABILITY_TOLERANCE = 1e-4


def fingerprint(folder: Path) -> str:
    """SHA-256 of the segmenter's lung.keras."""
    return hashlib.sha256((Path(folder) / WEIGHTS).read_bytes()).hexdigest()


def current_export(folder: Path) -> Path | None:
    """The export of the current lung.keras that passed its check, or None."""
    folder = Path(folder)
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") != "ok" or record.get("fingerprint") != fingerprint(folder):
        return None
    path = folder / ONNX_FILE
    return path if path.exists() else None


def open_session(path: Path):
    """An ONNX Runtime session with the worker's thread layout (models.predictor)."""
    import onnxruntime as ort

    from models.onnx_session import onnx_session_options, onnx_threads

    return ort.InferenceSession(
        str(path), onnx_session_options(onnx_threads(1)), providers=["CPUExecutionProvider"]
    )


def export_checked(folder: Path, network, x: np.ndarray, reference: np.ndarray) -> Path | None:
    """Export `network` (the segmenter after its equalisation) and check it on the
    prepared batch `x` against TensorFlow's `reference` output; the export's path when
    it passed, else None (the segmenter keeps TensorFlow; the reason is logged and
    recorded). Never raises: segmenting must not cost a batch its scores."""
    folder = Path(folder)
    try:
        with open(folder / f".{ONNX_FILE}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return current_export(folder) or _export(folder, network, x, reference)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except Exception:  # a read-only folder, a converter error...
        log.exception("lung segmenter export in %s failed; it keeps TensorFlow", folder)
        return None


def _export(folder: Path, network, x: np.ndarray, reference: np.ndarray) -> Path | None:
    from models.onnx_convert import OPSET, convert

    tmp = folder / f".{ONNX_FILE}.{os.getpid()}.tmp"
    convert(network, tmp)
    session = open_session(tmp)
    out = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0]
    diff = float(np.max(np.abs(out - reference))) if len(x) else 0.0
    ok = bool(diff <= PROBABILITY_TOLERANCE)
    record = {
        "format": "onnx",
        "opset": OPSET,
        "fingerprint": fingerprint(folder),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "check": {
            "images": int(len(x)),
            "max_probability_difference": diff,
            "tolerance": PROBABILITY_TOLERANCE,
        },  # fmt: skip
        "status": "ok" if ok else "refused",
        "reason": None if ok else f"probabilities differ by {diff:.3g}",
    }
    if ok:
        os.replace(tmp, folder / ONNX_FILE)
    else:
        tmp.unlink(missing_ok=True)
        log.warning("lung segmenter keeps TensorFlow: %s", record["reason"])
    out_tmp = folder / f".{RECORD_FILE}.{os.getpid()}.tmp"
    out_tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(out_tmp, folder / RECORD_FILE)
    return folder / ONNX_FILE if ok else None
