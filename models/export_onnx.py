"""Export a model version for ONNX Runtime, checked against TensorFlow before use.

The network after the pixel preparation (`models.split`) is frozen and converted with
tf2onnx (opset 17), then scored by ONNX Runtime and by the saved Keras model (pixel
preparation in the graph, as trained) on the same images. The export is used only when
the largest difference of the calibrated probability and of the out-of-distribution
score stay within the tolerances below; otherwise the version keeps TensorFlow and the
record says why. The export lives beside model.keras (`model.onnx`) with a record
(`model.onnx.json`) naming the fingerprint of the model.keras it came from, so a changed
model file is never scored by a stale export.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from models.export_record import ONNX_FILE, RECORD_FILE, fingerprint, read_record
from models.onnx_convert import OPSET, convert
from models.pixel_views import describe

log = logging.getLogger(__name__)

# Largest accepted difference from TensorFlow, over the check images: of the calibrated
# P(covid) (scores are shown to 4 decimals) and of the out-of-distribution score (flagged
# above 1.0). Measured on the shipped models: about 1e-6 and 1e-5 (README).
PROBABILITY_TOLERANCE = 1e-4
OOD_SCORE_TOLERANCE = 1e-3
# Versions without an out-of-distribution calibration: features compared relative to
# their largest magnitude.
FEATURE_TOLERANCE = 1e-3
# Heat maps (models.gradcam.maps_output, 0..1 after finish_maps): largest difference
# at any position; lung_heat_share is stored to 4 decimals.
MAP_TOLERANCE = 1e-3
CHECK_BATCH = 8


@contextmanager
def _export_lock(folder: Path) -> Iterator[None]:
    """One export per version at a time across processes (several workers may load the
    same new version at once); the others wait, then read its record."""
    with open(Path(folder) / f".{ONNX_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tensorflow_outputs(model, images: np.ndarray, maps: bool = True) -> tuple:
    """P(covid), features and (when the head allows) the heat maps before
    models.gradcam.finish_maps of the saved Keras model as trained (preparation in the
    graph): the reference the export must reproduce."""
    from models.ood import with_features

    net = with_features(model, maps=maps)
    chunks = [images[i : i + CHECK_BATCH] for i in range(0, len(images), CHECK_BATCH)]
    outs = [net([chunk], training=False) for chunk in chunks]
    probs = np.concatenate([np.asarray(o[0]).reshape(-1) for o in outs])
    feats = np.concatenate([np.asarray(o[1], dtype=np.float32) for o in outs])
    maps = (
        np.concatenate([np.asarray(o[2], np.float32) for o in outs]) if len(outs[0]) > 2 else None
    )
    return probs, feats, maps


def compare(
    folder: Path, temperature: float, reference: tuple, candidate: tuple,
    map_frame: tuple[int, int] | None = None,
) -> tuple[dict, str | None]:  # fmt: skip
    """The check's figures, and the reason to refuse the export (None: accepted).
    `reference` and `candidate` are (probabilities, features[, raw maps]); maps are
    compared as scoring uses them (models.gradcam.finish_maps with `map_frame`)."""
    from models.calibration import apply_temperature
    from models.ood import OODModel

    (p_ref, f_ref, *m_ref), (p_new, f_new, *m_new) = reference, candidate
    dp = float(np.max(np.abs(apply_temperature(p_ref, temperature)
                             - apply_temperature(p_new, temperature))))  # fmt: skip
    scale = max(float(np.max(np.abs(f_ref))), 1e-12)
    df = float(np.max(np.abs(f_ref - f_new))) / scale
    figures = {
        "max_probability_difference": dp,
        "max_feature_difference_relative": df,
        "tolerance": {
            "probability": PROBABILITY_TOLERANCE,
            "ood_score": OOD_SCORE_TOLERANCE,
            "feature_relative": FEATURE_TOLERANCE,
        },  # fmt: skip
    }
    reasons = []
    if not dp <= PROBABILITY_TOLERANCE:
        reasons.append(f"probability differs by {dp:.3g} (> {PROBABILITY_TOLERANCE})")
    ood = OODModel.load(folder)
    if ood is not None:
        ds = float(np.max(np.abs(ood.scores(f_ref) - ood.scores(f_new))))
        figures["max_ood_score_difference"] = ds
        if not ds <= OOD_SCORE_TOLERANCE:
            reasons.append(
                f"out-of-distribution score differs by {ds:.3g} (> {OOD_SCORE_TOLERANCE})"
            )
    elif not df <= FEATURE_TOLERANCE:
        reasons.append(f"features differ by {df:.3g} of their scale (> {FEATURE_TOLERANCE})")
    if map_frame is not None and m_ref and m_new and m_ref[0] is not None:
        from models.gradcam import finish_maps

        if m_new[0] is None:
            reasons.append("the export lost the heat maps output")
        else:
            dm = float(np.max(np.abs(finish_maps(m_ref[0], *map_frame)
                                     - finish_maps(m_new[0], *map_frame))))  # fmt: skip
            figures["max_map_difference"] = dm
            figures["tolerance"]["map"] = MAP_TOLERANCE
            if not dm <= MAP_TOLERANCE:
                reasons.append(f"heat maps differ by {dm:.3g} (> {MAP_TOLERANCE})")
    return figures, "; ".join(reasons) or None


def onnx_missing() -> str | None:
    """Why ONNX Runtime cannot be used here (not installed), or None. Looked up, not
    imported: importing tf2onnx imports TensorFlow, which a worker scoring a checked
    export never needs."""
    from importlib.util import find_spec

    for name in ("onnxruntime", "tf2onnx"):
        if find_spec(name) is None:
            return f"ONNX Runtime or tf2onnx not installed ({name}); pip install 'scanq[cpu]'"
    return None


def export_version(
    folder: Path | str, check_images: np.ndarray, checked_on: str, temperature: float | None = None
) -> dict:
    """Export the version at `folder` and check it on `check_images` ((N, S, S, 1) in
    0..255, e.g. its validation images; a lung-crop version's are cut to their lungs
    first, as it scores them: models.lung.field); returns the record written beside it,
    whose `status` is "ok" (use it) or "refused" (score with TensorFlow; `reason` says
    why). Never raises for a model that does not convert: that is a refusal too."""
    from models.lung.field import as_trained

    folder = Path(folder)
    with _export_lock(folder):
        current = read_record(folder)
        if current is not None:
            return current
        images = as_trained(folder, np.asarray(check_images, np.float32))
        return _export(folder, images, checked_on, temperature)


def _export(folder: Path, images: np.ndarray, checked_on: str, temperature: float | None) -> dict:
    import keras

    import models.layers  # noqa: F401 - registers the layers saved models hold
    from models.split import split_model

    started = time.monotonic()
    if len(images) == 0:
        raise ValueError("no images to check the export on")
    if temperature is None:
        card = folder / "card.json"
        temperature = json.loads(card.read_text()).get("temperature", 1.0) if card.exists() else 1.0
    record = _new_record(folder, checked_on) | {"versions": _library_versions()}
    record["check"]["images"] = int(len(images))
    tmp = folder / f".{ONNX_FILE}.{os.getpid()}.tmp"
    try:
        model = keras.models.load_model(folder / "model.keras", compile=False)
        from models.lung.modalities import maps_wanted

        views, network = split_model(model, maps=maps_wanted(folder))
        record["input_size"] = int(model.input_shape[1])
        record["views"] = [[[s.kind, list(s.args)] for s in v] for v in views]
        record["views_readable"] = describe(views)
        frame = None
        if len(network.outputs) > 2:  # heat maps (models.gradcam.maps_output)
            from models.gradcam import map_frame

            frame = map_frame(model)
            record["map_frame"] = list(frame)
        record["inputs"], record["outputs"] = convert(network, tmp)
        from models.predictor import OnnxPredictor

        candidate = OnnxPredictor.from_files(tmp, record, model=model, batch_size=CHECK_BATCH)
        reference = _tensorflow_outputs(model, images, maps=frame is not None)
        figures, reason = compare(folder, float(temperature), reference,
                                  candidate.raw_outputs_with_maps(images), frame)  # fmt: skip
        record["check"] |= figures
    except Exception as exc:  # a layer tf2onnx cannot convert, a runtime error...
        log.exception("export of %s failed", folder)
        reason = f"export failed: {type(exc).__name__}: {exc}"[:500]
    record["seconds"] = round(time.monotonic() - started, 1)
    if reason is None:
        os.replace(tmp, folder / ONNX_FILE)
        record |= {"status": "ok", "reason": None}
    else:
        tmp.unlink(missing_ok=True)
        (folder / ONNX_FILE).unlink(missing_ok=True)
        record |= {"status": "refused", "reason": reason}
        log.warning("%s keeps TensorFlow: %s", folder, reason)
    return _write_record(folder, record)


def _new_record(folder: Path, checked_on: str) -> dict:
    """What every record of an export attempt starts with, kept or refused."""
    return {
        "format": "onnx",
        "opset": OPSET,
        "model_fingerprint": fingerprint(folder),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "check": {"checked_on": checked_on},
    }


def _write_record(folder: Path, record: dict) -> dict:
    out = folder / f".{RECORD_FILE}.{os.getpid()}.tmp"
    out.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(out, folder / RECORD_FILE)
    return record


# How long an export in its own process may take before it is given up (and refused).
EXPORT_TIMEOUT_S = 1800


def export_apart(
    folder: Path | str, check_images: np.ndarray, checked_on: str, temperature: float | None = None
) -> dict:
    """`export_version` in a fresh interpreter of its own, for a worker process. The
    conversion's memory peak is the export process's, returned when it ends: in the
    worker child itself it counted against Celery's `worker_max_memory_per_child`, so
    a large backbone's first-load export got the child replaced before it finished, and
    every new child started it again (docs/benchmarks.md). An export process that dies
    or runs out of time is a refusal with its reason, like a model that does not convert."""
    import subprocess
    import sys
    import tempfile

    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="scanq-export-") as tmp:
        images = Path(tmp) / "check.npy"
        np.save(images, np.asarray(check_images, np.float32))
        command = [sys.executable, "-m", "models.export_onnx", str(folder), str(images), checked_on]
        if temperature is not None:
            command += ["--temperature", repr(float(temperature))]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
            failure = None if done.returncode == 0 else (
                f"the export process ended with status {done.returncode}: "
                f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}"
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            failure = f"the export process took more than {EXPORT_TIMEOUT_S} s"
    # Under the export lock: another process exporting the same version may still write
    # its record, which then stands.
    with _export_lock(folder):
        record = read_record(folder)
        if record is not None:
            return record
        failure = failure or "the export process wrote no record"
        log.warning("%s keeps TensorFlow: %s", folder, failure)
        refused = {"status": "refused", "reason": failure[:500]}
        return _write_record(folder, _new_record(folder, checked_on) | refused)


def main(argv: list[str] | None = None) -> int:
    """The export process of `export_apart`: folder, check images (.npy), what they are."""
    import argparse

    ap = argparse.ArgumentParser(description="export one model version for ONNX Runtime")
    ap.add_argument("folder", type=Path)
    ap.add_argument("images", type=Path, help="check images, (N, S, S, 1) float32 .npy")
    ap.add_argument("checked_on", help="what the check images are, for the record")
    ap.add_argument("--temperature", type=float, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = export_version(args.folder, np.load(args.images), args.checked_on, args.temperature)
    print(record["status"], record.get("reason") or "")
    return 0


def _library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


# Validation images a new version's export is checked on (the first this many).
CHECK_LIMIT = 64


def export_new_version(folder: Path, examples: list, validation_count: int,
                       temperature: float) -> dict | None:  # fmt: skip
    """The after-save export of a newly trained version, checked on its validation
    images: the last `validation_count` of `examples` (what it saw: training, then
    validation). Returns what its card keeps of the record, or None when this machine
    scores with TensorFlow only (`SCANQ_RUNTIME=tensorflow`, or no ONNX Runtime): the
    version then gets its export on first load where ONNX Runtime is used."""
    from models.decode import decode_examples
    from models.export_record import card_entry
    from scanq.settings import load_settings

    if load_settings().runtime == "tensorflow" or onnx_missing():
        return None
    try:
        validation = examples[len(examples) - validation_count :] if validation_count else []
        size = int(json.loads((Path(folder) / "card.json").read_text())["input_size"])
        images = decode_examples(validation[:CHECK_LIMIT], size)[1]
        record = export_apart(folder, images, "its validation images", temperature)
    except Exception:  # never fails the save: the version exports on first load instead
        log.exception("after-save export of %s failed", folder)
        return None
    return card_entry(record)


if __name__ == "__main__":
    raise SystemExit(main())
