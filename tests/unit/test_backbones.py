"""Every backbone builds offline, scales its own input, and names a real top stage for
fine-tuning; without cached ImageNet weights it starts at random and says so."""

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


def test_missing_imagenet_weights_mean_a_random_start_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    with caplog.at_level(logging.WARNING):
        model, _features, pretrained = build_classifier("mobilenetv2", 96, augment=False)
    assert pretrained is False
    assert "no ImageNet weights for mobilenetv2" in caplog.text
    p = model.predict(np.full((2, 96, 96, 1), 128.0, np.float32), verbose=0)
    assert p.shape == (2, 1) and np.all((p >= 0) & (p <= 1))
