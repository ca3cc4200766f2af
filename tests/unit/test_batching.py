"""The model's call shape is a speed choice only: any shape gives the same scores."""

from pathlib import Path

import numpy as np

from models.batching import CPU_BATCH, model_batch_size
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
