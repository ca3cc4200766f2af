"""The pixel preparation in NumPy computes what the model's own layers compute, so a
model cut into preparation + network scores exactly as the whole model does."""

from pathlib import Path

import numpy as np
import pytest

from models.pixel_views import Step, bilinear_matrix, equalize, prepare, resize
from models.preprocess import load_for_model

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "default"


@pytest.fixture(scope="module")
def real_images(shared_data):
    paths = sorted((shared_data / "ct" / "dev").rglob("*.png"))[::61][:4]
    return np.stack([load_for_model(p, 352) for p in paths])


def test_equalisation_and_resizes_match_the_layers_bit_for_bit(real_images):
    import keras
    import tensorflow as tf

    from models.layers import HistogramEqualization

    np.testing.assert_array_equal(equalize(real_images),
                                  HistogramEqualization()(real_images).numpy())  # fmt: skip
    for size, antialias in ((288, True), (224, True), (300, True), (288, False), (401, False)):
        layer = keras.layers.Resizing(size, size, antialias=antialias)
        ours = resize(real_images, size, size, antialias)
        np.testing.assert_array_equal(ours, layer(real_images).numpy(), err_msg=f"{size}")
    # A resize then equalisation (the CT model's second view) is exact too: a resized
    # pixel one float step off would round to another grey level.
    views = prepare(real_images, ((Step("resize", (288, 288, True)), Step("equalize")),))
    expected = HistogramEqualization()(tf.image.resize(real_images, (288, 288), antialias=True))
    np.testing.assert_array_equal(views[0], expected.numpy())


def test_shipped_ct_model_split_scores_as_the_whole_model(real_images):
    """Two sizes, each equalised: prepared in NumPy, then the rest of the graph."""
    import keras

    import models.layers  # noqa: F401
    from models.ood import with_features
    from models.split import split_model

    model = keras.models.load_model(SHIPPED / "ct" / "model.keras", compile=False)
    views, network = split_model(model)
    assert [[s.kind for s in v] for v in views] == [["equalize"], ["resize", "equalize"]]
    whole = with_features(model)([real_images])
    split = network(prepare(real_images, views))
    np.testing.assert_allclose(np.asarray(split[0]), np.asarray(whole[0]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(split[1]), np.asarray(whole[1]), rtol=1e-5, atol=1e-5)
    assert np.ptp(np.asarray(whole[0])) > 1e-3  # real, differing scores


@pytest.mark.parametrize(("n_in", "n_out"), [(128, 256), (128, 299), (256, 128), (64, 64)])
def test_the_matrix_resize_is_the_plain_bilinear_resize(n_in, n_out):
    """Masks and maps are resized by two matrix products: the same bilinear resize as
    `resize` (to float rounding), up or down."""
    x = np.random.default_rng(n_in + n_out).uniform(0, 1, (3, n_in, n_in)).astype(np.float32)
    m = bilinear_matrix(n_in, n_out)
    expected = resize(x[..., None], n_out, n_out, False)[..., 0]
    np.testing.assert_allclose(m @ x @ m.T, expected, atol=2e-6)
