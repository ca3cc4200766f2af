"""Layers of our own (histogram equalisation, spread pooling) agree with their
references and survive a save."""

import numpy as np
from PIL import Image, ImageOps

from models.layers import HistogramEqualization


def test_equalization_matches_pillow_and_handles_flat_images(shared_data, tmp_path):
    import keras

    paths = sorted((shared_data / "ct" / "dev" / "covid").glob("*.png"))[:3]
    imgs = [np.asarray(Image.open(p).convert("L").resize((96, 96))) for p in paths]
    flat = np.full((96, 96), 40, np.uint8)
    x = np.stack([*imgs, flat])[..., None].astype("float32")
    out = np.asarray(HistogramEqualization()(x))
    assert out.shape == x.shape
    for i, img in enumerate(imgs):
        ours, pillow = out[i, ..., 0], np.asarray(ImageOps.equalize(Image.fromarray(img)))
        assert ours.max() == 255 and ours.min() == 0  # stretched to the full range
        levels = np.unique(img)  # a monotone map of grey levels: order is kept
        mapped = np.array([ours[img == v][0] for v in levels])
        assert np.all(np.diff(mapped) >= 0)
        # Pillow rounds its steps differently (a few levels apart), but it is the same map
        assert np.corrcoef(ours.ravel(), pillow.ravel())[0, 1] > 0.98
    assert np.unique(out[3]).size == 1  # a flat image stays flat, without NaNs
    inp = keras.Input((96, 96, 1))
    model = keras.Model(inp, HistogramEqualization(name="equalize")(inp))
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)), out)


def test_std_pooling_matches_numpy_survives_a_save_and_has_finite_gradients(tmp_path):
    import keras
    import tensorflow as tf

    from models.backbones import build_probe_features
    from models.layers import GlobalStdPooling2D

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 5, 4)).astype("float32")
    x[:, :, :, 2] = 1.5  # a constant channel: spread 0, and no NaN in its gradient
    out = np.asarray(GlobalStdPooling2D()(x))
    np.testing.assert_allclose(out, np.sqrt(x.var(axis=(1, 2)) + 1e-6), rtol=1e-5)
    t = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(t)
        total = tf.reduce_sum(GlobalStdPooling2D()(t))
    assert np.isfinite(np.asarray(tape.gradient(total, t))).all()
    # In a probe: the spreads follow the means, and the saved file rebuilds it
    means, _ = build_probe_features("efficientnet_lite0", 64, weights=None)
    both, _ = build_probe_features("efficientnet_lite0", 64, weights=None, pool="avg_std")
    assert both.output_shape[-1] == 2 * means.output_shape[-1]
    both.save(tmp_path / "p.keras")
    again = keras.models.load_model(tmp_path / "p.keras")
    img = rng.uniform(0, 255, (2, 64, 64, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(again(img)), np.asarray(both(img)), rtol=1e-5, atol=1e-6)
