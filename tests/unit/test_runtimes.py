"""ONNX Runtime scores as TensorFlow does: the shipped export on real X-rays, and a new
version exported on its first batch, refused when it does not match."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.export_onnx import OOD_SCORE_TOLERANCE, PROBABILITY_TOLERANCE
from models.export_record import ONNX_FILE, RECORD_FILE, read_record
from models.preprocess import load_for_model
from models.runtimes import ExportOnFirstBatch, choose, load_predictor

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "default"


def test_runtime_choice_and_setting(monkeypatch):
    from scanq.settings import load_settings

    assert choose("auto", "cpu") == "onnx"
    assert choose("auto", "gpu") == "tensorflow"  # the GPU path stays TensorFlow
    assert choose("tensorflow", "cpu") == "tensorflow"
    assert choose("onnx", "gpu") == "onnx"
    monkeypatch.setenv("SCANQ_RUNTIME", "ONNX")
    assert load_settings().runtime == "onnx"
    monkeypatch.setenv("SCANQ_RUNTIME", "tflite")
    with pytest.raises(ValueError, match="SCANQ_RUNTIME must be one of auto, tensorflow, onnx"):
        load_settings()


def test_shipped_export_scores_as_tensorflow_on_real_xrays(shared_data):
    """The same probabilities, features and out-of-distribution verdicts through both
    runtimes (the shipped export was checked on the version's validation images)."""
    from models.predictor import OnnxPredictor, Predictor

    folder = SHIPPED / "xray"
    record = read_record(folder)
    assert record is not None and record["status"] == "ok", "shipped export stale or missing"
    assert record["check"]["checked_on"] == "its validation images"
    card = json.loads((folder / "card.json").read_text())
    paths = sorted((shared_data / "xray" / "dev").rglob("*.png"))[::41][:10]
    tf_p = Predictor(folder, 4, card["temperature"])
    onnx_p = load_predictor(folder, "onnx", 4, card["temperature"], streams=2)
    assert isinstance(onnx_p, OnnxPredictor)
    images = np.stack([load_for_model(p, tf_p.input_size) for p in paths])  # 10: partial call
    (p_tf, v_tf), (p_onnx, v_onnx) = (
        tf_p.predict_and_judge(images),
        onnx_p.predict_and_judge(images),
    )
    np.testing.assert_allclose(p_onnx, p_tf, atol=PROBABILITY_TOLERANCE)
    scores = [(a.score, b.score) for a, b in zip(v_tf, v_onnx, strict=True)]
    np.testing.assert_allclose(*zip(*scores, strict=True), atol=OOD_SCORE_TOLERANCE)
    assert [v.flagged for v in v_tf] == [v.flagged for v in v_onnx]
    assert np.diff(np.sort(p_tf)).min() > PROBABILITY_TOLERANCE  # a swap would show


def _small_version(folder: Path) -> Path:
    """A small untrained classifier whose graph starts with a crop (and its resize) and
    equalisation: everything the preparation moves out of the graph."""
    from models.backbones import build_classifier

    folder.mkdir(parents=True)
    model, _f, _p = build_classifier("smallcnn", 64, weights=None, augment=False, equalize=True,
                                     crop=0.05)  # fmt: skip
    model.save(folder / "model.keras")
    return folder


def test_version_without_export_gets_it_on_first_batch(tmp_path, shared_data):
    folder = _small_version(tmp_path / "v1")
    paths = sorted((shared_data / "xray" / "dev").rglob("*.png"))[:6]
    images = np.stack([load_for_model(p, 64) for p in paths])
    first = load_predictor(folder, "onnx", 4, 1.0, streams=1)
    assert isinstance(first, ExportOnFirstBatch) and first.runtime == "tensorflow"
    blank = np.zeros((1, 64, 64, 1), np.float32)
    first.predict(blank)  # the warm-up's trace: nothing to check an export on
    assert not first.exported.wait(0.5) and read_record(folder) is None
    p_tf = first.predict(images)  # TensorFlow scores it; the export is checked on it
    assert first.exported.wait(300)
    record = json.loads((folder / RECORD_FILE).read_text())
    assert record["status"] == "ok", record
    assert record["check"]["images"] == 6
    assert record["check"]["max_probability_difference"] <= PROBABILITY_TOLERANCE
    assert first.runtime == "onnx"
    np.testing.assert_allclose(first.predict(images), p_tf, atol=PROBABILITY_TOLERANCE)
    # A later process loads the export at once.
    assert load_predictor(folder, "onnx", 4, 1.0, streams=1).runtime == "onnx"
    # A changed model file is never scored by the export made from the old one.
    shutil.copy(SHIPPED / "xray" / "model.keras", folder / "model.keras")
    assert read_record(folder) is None


def test_refused_export_keeps_tensorflow_with_the_reason(tmp_path, shared_data, monkeypatch):
    from models import export_onnx

    folder = _small_version(tmp_path / "v2")
    images = np.stack([load_for_model(p, 64) for p in
                       sorted((shared_data / "xray" / "dev").rglob("*.png"))[:3]])  # fmt: skip
    monkeypatch.setattr(export_onnx, "PROBABILITY_TOLERANCE", -1.0)  # nothing can pass
    # In this process (a worker exports in a process of its own, which this patch
    # would not reach: the next test).
    record = export_onnx.export_version(folder, images, "three dev X-rays")
    assert record == read_record(folder)
    assert record["status"] == "refused" and "probability differs" in record["reason"]
    assert not (folder / ONNX_FILE).exists()
    assert load_predictor(folder, "onnx", 4, 1.0, streams=1).runtime == "tensorflow"


def test_an_export_process_that_dies_is_a_refusal_and_scoring_goes_on(
    tmp_path, shared_data, monkeypatch
):
    """The first-load export runs in its own interpreter; one that dies (here: an
    interpreter that exits at once, as an out-of-memory kill would end it) leaves the
    version on TensorFlow with the reason, and its batches scored."""
    import sys

    folder = _small_version(tmp_path / "v3")
    images = np.stack([load_for_model(p, 64) for p in
                       sorted((shared_data / "xray" / "dev").rglob("*.png"))[:3]])  # fmt: skip
    predictor = load_predictor(folder, "onnx", 4, 1.0, streams=1)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    probs = predictor.predict(images)
    assert probs.shape == (3,) and np.isfinite(probs).all()
    assert predictor.exported.wait(60)
    record = read_record(folder)
    assert record["status"] == "refused" and "ended with status 1" in record["reason"]
    assert predictor.runtime == "tensorflow"
    assert load_predictor(folder, "onnx", 4, 1.0, streams=1).runtime == "tensorflow"
