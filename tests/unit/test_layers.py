"""Histogram equalisation inside the model agrees with Pillow's and survives a save."""

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
