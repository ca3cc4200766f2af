"""Grad-CAM: which regions drove a score.

The map is taken at the deepest pooled feature map of the model (the input of its last
GlobalAveragePooling2D layer: the backbone's final activations for fine-tuned models,
the deepest of the probe's pooled depths for probes), weighted by the gradient of the
model's output with respect to it (Selvaraju et al., 2017); for a probe that sees the
image at several sizes, at each size's, summed. It is computed in the worker
on request, not for every scored image: it needs a backward pass per image.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image


def _target_layers(model) -> list:
    """The pooling layer over the coarsest (deepest) feature map of each size the model
    sees the image at: one for most models, one per size for a probe with `scales`
    (models.backbones names those layers `pool_<size>_<layer>`)."""
    import keras

    pools = [ly for ly in model.layers if isinstance(ly, keras.layers.GlobalAveragePooling2D)]
    if not pools:
        raise ValueError("the model has no pooled feature map to explain")
    branches: dict[str, list] = {}
    for layer in pools:
        tag = re.match(r"pool_(\d+)_", layer.name)
        branches.setdefault(tag.group(1) if tag else "", []).append(layer)
    return [
        min(layers, key=lambda layer: int(np.prod(layer.input.shape[1:3])))
        for layers in branches.values()
    ]


def explainer(model):
    """A function image (S, S, 1) float32 0..255 -> (probability, map (h, w) in 0..1).
    With several sizes, each size's weighted map is brought to the finest grid and
    their sum is the map: the score depends on all of them."""
    import keras
    import tensorflow as tf

    targets = _target_layers(model)
    grad_model = keras.Model(model.inputs, [[t.input for t in targets], model.outputs[0]])
    size, edge = int(model.input_shape[1]), _border_crop(model)

    def explain(image: np.ndarray) -> tuple[float, np.ndarray]:
        x = tf.convert_to_tensor(image[None].astype(np.float32))
        with tf.GradientTape() as tape:
            fmaps, prob = grad_model(x, training=False)
            target = tf.reduce_sum(tf.cast(prob, tf.float32))
        grads = tape.gradient(target, fmaps)
        cams = []
        for fmap, grad in zip(fmaps, grads, strict=True):
            weights = tf.reduce_mean(tf.cast(grad, tf.float32), axis=(1, 2))[0].numpy()
            cams.append(tf.cast(fmap, tf.float32)[0].numpy() @ weights)
        h, w = max(c.shape for c in cams)
        cam = sum(_resized(c, h, w) for c in cams)
        cam = np.maximum(cam, 0.0)
        top = float(cam.max())
        cam = cam / top if top > 0 else cam
        if edge:  # the map covers only the middle the model kept: put it back there
            cam = _into_frame(cam, size, edge)
        return float(np.asarray(prob).reshape(-1)[0]), cam

    return explain


def _resized(cam: np.ndarray, h: int, w: int) -> np.ndarray:
    if cam.shape == (h, w):
        return cam
    image = Image.fromarray(cam.astype(np.float32), mode="F")
    return np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _border_crop(model) -> int:
    """Pixels the model's own stem cuts from each edge (models.backbones `crop`)."""
    try:
        (top, _bottom), _cols = model.get_layer("border_crop").cropping
    except ValueError:  # no such layer
        return 0
    return int(top)


def _into_frame(cam: np.ndarray, size: int, edge: int) -> np.ndarray:
    inner = size - 2 * edge
    scaled = Image.fromarray(cam.astype(np.float32), mode="F").resize(
        (inner, inner), Image.Resampling.BILINEAR
    )
    frame = np.zeros((size, size), dtype=np.float32)
    frame[edge : edge + inner, edge : edge + inner] = np.clip(np.asarray(scaled), 0.0, 1.0)
    return frame


def overlay(gray: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heat map over the original grey image, at the image's own size (RGB)."""
    h, w = gray.shape
    heat = (
        np.asarray(
            Image.fromarray((cam * 255).astype(np.uint8), mode="L").resize(
                (w, h), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        / 255.0
    )
    colour = _colormap(heat)
    base = np.repeat(gray[..., None].astype(np.float32), 3, axis=2)
    mixed = (1 - alpha * heat[..., None]) * base + alpha * heat[..., None] * colour
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8), mode="RGB")


def _colormap(v: np.ndarray) -> np.ndarray:
    """Blue -> green -> yellow -> red for 0..1 (a jet-like ramp without matplotlib)."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.stack([r, g, b], axis=-1) * 255.0
