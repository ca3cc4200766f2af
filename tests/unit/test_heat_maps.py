"""Heat maps as a forward output of the scoring call (models.gradcam.maps_output): the
same maps as the gradient path (batch_explainer) on real dev images for the shipped
X-ray and CT probes and small fine-tuned and spread-pooling models, through the
TensorFlow predictor and the ONNX export, and an export made before maps existed still
gets its lung shares (by the gradient path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.gradcam import batch_explainer, finish_maps, map_frame, maps_output
from models.ood import with_features
from models.preprocess import load_for_model

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "default"
# After the 0..1 scaling; both paths compute the same float32 sums in another order.
TOLERANCE = 1e-5


def _images(shared_data: Path, modality: str, size: int, n: int = 4) -> np.ndarray:
    paths = sorted((shared_data / modality / "dev").rglob("*.png"))[::53][:n]
    return np.stack([load_for_model(p, size) for p in paths])


def _forward_maps(model, images: np.ndarray) -> np.ndarray:
    outputs = with_features(model, maps=True)([images], training=False)
    assert len(outputs) == 3, "the model's head should allow forward maps"
    return finish_maps(np.asarray(outputs[2]), *map_frame(model))


def _assert_same_maps(model, images: np.ndarray) -> None:
    probs, expected = batch_explainer(model)(images)
    got = _forward_maps(model, images)
    assert got.shape == expected.shape
    assert expected.max() == pytest.approx(1.0)  # real maps, not all zero
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    np.testing.assert_allclose(
        np.asarray(with_features(model)([images])[0]).reshape(-1), probs, atol=1e-6
    )


@pytest.mark.parametrize("modality", ["xray", "ct"])
def test_forward_maps_of_the_shipped_models_are_the_gradient_maps(shared_data, modality):
    import keras

    import models.layers  # noqa: F401

    model = keras.models.load_model(SHIPPED / modality / "model.keras", compile=False)
    _assert_same_maps(model, _images(shared_data, modality, int(model.input_shape[1])))


def _random_head(model, seed: int) -> None:
    dense = model.get_layer("covid")
    kernel, bias = dense.get_weights()
    rng = np.random.default_rng(seed)
    # small enough that the sigmoid is not saturated (the gradient path's maps would be 0)
    weights = rng.normal(0.5, 1, kernel.shape) / kernel.shape[0]
    dense.set_weights([weights.astype("float32"), bias])


def test_forward_maps_of_small_fine_tuned_and_spread_pooling_models(shared_data):
    from models.backbones import attach_linear_head, build_classifier, build_probe_features

    # fine-tuned shape: one pooled map, dropout, dense unit; a border crop to frame back
    tuned, _f, _p = build_classifier("smallcnn", 64, weights=None, augment=False, crop=0.1)
    _random_head(tuned, 0)
    _assert_same_maps(tuned, _images(shared_data, "xray", 64))
    # probe shape with spreads and a second scale: standardisation, then the unit
    features, _ = build_probe_features("smallcnn", 64, None, pool="avg_std", scales=(48,))
    n = int(features.output.shape[1])
    rng = np.random.default_rng(1)
    probe = attach_linear_head(features, rng.normal(0, 0.01, n), rng.uniform(0.5, 2, n),
                               rng.normal(0.5, 1, n), 0.1)  # fmt: skip
    _assert_same_maps(probe, _images(shared_data, "ct", 64))


def test_a_head_not_linear_in_the_pooled_features_has_no_forward_maps():
    import keras
    from keras import layers

    inp = keras.Input((32, 32, 1))
    x = layers.GlobalAveragePooling2D(name="pool")(layers.Conv2D(4, 3)(inp))
    out = layers.Dense(1, activation="sigmoid", name="covid")(layers.Dense(8, "relu")(x))
    model = keras.Model(inp, out)
    assert maps_output(model) is None
    assert len(with_features(model, maps=True).outputs) == 2
    assert batch_explainer(model)(np.zeros((1, 32, 32, 1), np.float32))[1].shape == (1, 30, 30)


def _small_version(folder: Path) -> Path:
    from models.backbones import build_classifier

    folder.mkdir(parents=True)
    model, _f, _p = build_classifier("smallcnn", 64, weights=None, augment=False, equalize=True,
                                     crop=0.05)  # fmt: skip
    _random_head(model, 2)
    model.save(folder / "model.keras")
    return folder


def test_both_runtimes_return_the_maps_from_the_scoring_call(tmp_path, shared_data):
    """TensorFlow and the ONNX export give the gradient path's maps with the scores;
    an export without the maps output (made before it existed) scores as before and
    its lung shares come from the gradient path."""
    import onnx

    from models.export_onnx import MAP_TOLERANCE
    from models.export_record import ONNX_FILE, RECORD_FILE
    from models.lung.share import lung_heat_shares, shares_for_scoring
    from models.predictor import OnnxPredictor, Predictor
    from models.runtimes import load_predictor

    folder = _small_version(tmp_path / "v")
    images = _images(shared_data, "xray", 64, n=6)
    tf_p = Predictor(folder, 4)
    _probs, expected = batch_explainer(tf_p.model)(images)
    p_tf, _v, maps_tf = tf_p.predict_judge_and_map(images)
    np.testing.assert_allclose(maps_tf, expected, atol=TOLERANCE)
    np.testing.assert_allclose(p_tf, tf_p.predict(images), atol=1e-6)

    first = load_predictor(folder, "onnx", 4, 1.0, streams=1)
    first.predict(images)  # starts the export, checked on these images
    assert first.exported.wait(300)
    record = json.loads((folder / RECORD_FILE).read_text())
    assert record["status"] == "ok", record
    assert record["check"]["max_map_difference"] <= MAP_TOLERANCE
    onnx_p = load_predictor(folder, "onnx", 4, 1.0, streams=2)
    assert isinstance(onnx_p, OnnxPredictor)
    p_onnx, _v, maps_onnx = onnx_p.predict_judge_and_map(images)
    np.testing.assert_allclose(maps_onnx, expected, atol=MAP_TOLERANCE)
    np.testing.assert_allclose(p_onnx, p_tf, atol=1e-4)

    # An export of two outputs only, as made before the maps output existed.
    graph = onnx.load(folder / ONNX_FILE)
    del graph.graph.output[2]
    onnx.save(graph, folder / ONNX_FILE)
    record.pop("map_frame")
    (folder / RECORD_FILE).write_text(json.dumps(record))
    old = load_predictor(folder, "onnx", 4, 1.0, streams=1)
    assert isinstance(old, OnnxPredictor)
    p_old, _v, no_maps = old.predict_judge_and_map(images)
    assert no_maps is None
    np.testing.assert_allclose(p_old, p_onnx, atol=1e-6)
    from models.lung.segmenter import shipped

    by_gradients = shares_for_scoring(old, images)
    assert all(s is not None and 0.0 <= s <= 1.0 for s in by_gradients)
    # (ONNX and TensorFlow segment alike: tests/unit/test_lung.py)
    expected_shares = lung_heat_shares(tf_p.model, images, shipped())
    np.testing.assert_allclose(by_gradients, expected_shares, atol=1e-3)
    np.testing.assert_allclose(shares_for_scoring(onnx_p, images, maps_onnx), expected_shares,
                               atol=1e-3)  # fmt: skip


def test_only_versions_with_lung_shares_carry_maps_in_their_scoring_call():
    """X-ray versions return maps with their scores; CT versions, which get no lung
    share, are exported and scored without them (their cost is not paid for nothing)."""
    from models.export_record import read_record
    from models.lung.modalities import maps_wanted

    assert maps_wanted(SHIPPED / "xray") and not maps_wanted(SHIPPED / "ct")
    assert read_record(SHIPPED / "xray")["map_frame"] == [256, 0]
    assert "map_frame" not in read_record(SHIPPED / "ct")
    assert len(read_record(SHIPPED / "ct")["outputs"]) == 2
