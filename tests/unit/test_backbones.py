"""Every backbone builds offline, scales its own input, and names a real top stage for
fine-tuning and real layers for the probe; without cached ImageNet weights it starts at
random and says so."""

import logging

import numpy as np
import pytest

from models.backbones import BACKBONES, _feature_extractor, build_classifier


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_fine_tuning_boundary_is_a_real_layer(name):
    spec = BACKBONES[name]
    if name == "smallcnn":
        assert spec.finetune_from == "" and spec.cache_file is None
        return
    features = _feature_extractor(name, spec.default_size, None)
    names = [layer.name for layer in features.layers]
    first = next(i for i, n in enumerate(names) if n.startswith(spec.finetune_from))
    assert 0 < first < len(names) - 1  # the top stage only, never the whole network
    # The depths a probe pools are layers of this network, deepest last.
    where = [names.index(layer) for layer in spec.probe_layers]
    assert where == sorted(where)
    if name.startswith("efficientnet_lite"):
        assert spec.probe_layers[-1] == "head_relu" and len(spec.probe_layers) == 5


def test_missing_imagenet_weights_mean_a_random_start_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    with caplog.at_level(logging.WARNING):
        model, _features, pretrained = build_classifier("mobilenetv2", 96, augment=False)
    assert pretrained is False
    assert "no ImageNet weights for mobilenetv2" in caplog.text
    p = model.predict(np.full((2, 96, 96, 1), 128.0, np.float32), verbose=0)
    assert p.shape == (2, 1) and np.all((p >= 0) & (p <= 1))


def test_border_crop_is_inside_the_model_and_grad_cam_maps_back_to_the_whole_image():
    """A model that cuts its input's border sees only the middle: an image that differs
    only in the border scores the same, and its Grad-CAM covers the middle only."""
    from models.gradcam import explainer

    model, _f, _p = build_classifier("smallcnn", 64, weights=None, augment=False, crop=0.25)
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (64, 64, 1)).astype(np.float32)
    other = image.copy()
    other[:16] = 0.0  # change only the cut-off top quarter
    p1, p2 = model.predict(np.stack([image, other]), verbose=0).reshape(-1)
    assert p1 == pytest.approx(p2, abs=1e-6)
    _prob, cam = explainer(model)(image)
    assert cam.shape == (64, 64)  # the whole input frame, not the cropped middle
    assert cam[:16].max() == 0 and cam[-16:].max() == 0 and cam[:, :16].max() == 0


def test_a_cropped_models_heat_map_lands_on_the_middle_it_saw():
    from models.gradcam import _into_frame

    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = 1.0  # the top-left cell of what the model saw
    frame = _into_frame(cam, size=64, edge=16)
    assert frame.shape == (64, 64)
    assert frame[:16].max() == 0 and frame[:, :16].max() == 0 and frame[48:].max() == 0
    peak = np.unravel_index(np.argmax(frame), frame.shape)
    assert 16 <= peak[0] < 24 and 16 <= peak[1] < 24


def test_position_shares_split_the_pooled_score_exactly():
    """What the heat map gives each position adds up to what the pooled features give
    the score, for the spatial mean and for the spread (models.layers)."""
    from models.gradcam import position_shares

    rng = np.random.default_rng(1)
    fmap = rng.gamma(2.0, 1.0, (7, 5, 12)).astype(np.float64)
    g_mean, g_spread = rng.normal(size=12), rng.normal(size=12)
    spread = np.sqrt(fmap.var(axis=(0, 1)) + 1e-6)  # as GlobalStdPooling2D computes it
    shares = position_shares(fmap, g_mean, spread, g_spread)
    assert shares.shape == (7, 5)
    expected = g_mean @ fmap.mean(axis=(0, 1)) + g_spread @ spread
    assert shares.sum() == pytest.approx(expected, rel=1e-5)


def test_the_heat_map_of_a_probe_lands_where_its_features_are():
    """A probe whose score rises with bright patches: the map of an image with one
    bright patch peaks on that patch, with every depth and spread pooled."""
    from models.backbones import attach_linear_head, build_probe_features
    from models.gradcam import explainer

    features, _ = build_probe_features("smallcnn", 64, None, pool="avg_std")
    n = int(features.output.shape[1])
    image = np.full((64, 64, 1), 40.0, np.float32)
    image[40:56, 8:24] = 250.0  # lower left
    plain = np.full((1, 64, 64, 1), 40.0, np.float32)
    coef = np.asarray(features(image[None]))[0] - np.asarray(features(plain))[0]
    model = attach_linear_head(features, np.zeros(n), np.ones(n), coef, 0.0)
    _prob, cam = explainer(model)(image)
    h, w = cam.shape
    peak = np.unravel_index(np.argmax(cam), cam.shape)
    assert peak[0] >= h // 2 and peak[1] < w // 2, (peak, cam.round(2))
