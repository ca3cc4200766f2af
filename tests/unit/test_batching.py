"""The model's call shape is a speed choice only: any shape gives the same scores."""

from pathlib import Path

import numpy as np

from models.batching import CPU_BATCH, CallPlan, call_plan, model_batch_size
from models.preprocess import load_for_model

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "default" / "xray"


def test_call_shape_changes_no_score(shared_data):
    from models.predictor import Predictor

    paths = sorted((shared_data / "xray" / "dev" / "covid").glob("*.png"))[:11]
    predictors = {rows: Predictor(SHIPPED, rows) for rows in (4, 8, 32)}
    size = predictors[4].input_size
    images = np.stack([load_for_model(p, size) for p in paths])  # not a multiple of 4 or 8
    by_shape = {rows: p.predict_with_features(images) for rows, p in predictors.items()}
    for rows in (4, 8):
        np.testing.assert_allclose(by_shape[rows][0], by_shape[32][0], atol=1e-5)
        np.testing.assert_allclose(by_shape[rows][1], by_shape[32][1], rtol=1e-3, atol=1e-3)
    assert np.ptp(by_shape[32][0]) > 0  # real, differing scores


def test_shape_by_backbone_and_device_and_override():
    assert model_batch_size("efficientnet_lite0", "cpu") == CPU_BATCH["efficientnet_lite0"]
    assert model_batch_size("a_new_backbone", "cpu") == 16
    assert model_batch_size("efficientnet_lite0", "gpu") == 64
    assert model_batch_size("xception", "gpu") == 32
    assert model_batch_size("vgg16", "cpu", override=12) == 12


def test_call_plan_gives_each_stream_a_call_per_task():
    # CPU: two calls in flight; a task of 32 is cut so that both get one.
    assert call_plan("mobilenetv2", "cpu", 32) == CallPlan(rows=16, streams=2)
    assert call_plan("efficientnet_lite0", "cpu", 32) == CallPlan(rows=8, streams=2)
    assert call_plan("efficientnet_lite0", "cpu", 5) == CallPlan(rows=3, streams=2)
    # GPU: one call at a time, as large as a task allows.
    assert call_plan("efficientnet_lite0", "gpu", 32) == CallPlan(rows=32, streams=1)
    # Overrides are taken as they are (rows still never above a task).
    assert call_plan("mobilenetv2", "cpu", 32, rows_override=32) == CallPlan(32, 2)
    assert call_plan("vgg16", "cpu", 32, streams_override=3) == CallPlan(4, 3)
    assert call_plan("vgg16", "cpu", 2, rows_override=12, streams_override=1) == CallPlan(2, 1)


def test_calls_in_flight_change_no_score_or_order(shared_data):
    """Two streams return every image's score in its own place (a mix-up between calls
    in flight would move scores between images)."""
    from models.predictor import Predictor

    paths = sorted((shared_data / "xray" / "dev").rglob("*.png"))[::37][:10]
    one, two = Predictor(SHIPPED, 4, streams=1), Predictor(SHIPPED, 4, streams=2)
    images = np.stack([load_for_model(p, one.input_size) for p in paths])
    for _ in range(3):  # the pool's threads finish in any order
        probs, feats = two.predict_with_features(images)
        np.testing.assert_allclose(probs, one.predict_with_features(images)[0], atol=1e-5)
        np.testing.assert_allclose(
            feats, one.predict_with_features(images)[1], rtol=1e-3, atol=1e-3
        )
    # Scores further apart than the tolerance above, so any two swapped would show.
    assert np.diff(np.sort(probs)).min() > 1e-5
