"""Grad-CAM: which regions drove a score.

The map is taken at the deepest pooled feature map of the model (the input of its last
GlobalAveragePooling2D layer: the backbone's final activations for fine-tuned models,
the deepest of the probe's pooled depths for probes), weighted by the gradient of the
model's output with respect to it (Selvaraju et al., 2017). It is computed in the worker
on request, not for every scored image: it needs a backward pass per image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _target_layer(model):
    """The pooling layer over the coarsest (deepest) feature map."""
    import keras

    pools = [ly for ly in model.layers if isinstance(ly, keras.layers.GlobalAveragePooling2D)]
    if not pools:
        raise ValueError("the model has no pooled feature map to explain")
    return min(pools, key=lambda layer: int(np.prod(layer.input.shape[1:3])))


def explainer(model):
    """A function image (S, S, 1) float32 0..255 -> (probability, map (h, w) in 0..1)."""
    import keras
    import tensorflow as tf

    layer = _target_layer(model)
    grad_model = keras.Model(model.inputs, [layer.input, model.outputs[0]])
    size, edge = int(model.input_shape[1]), _border_crop(model)

    def explain(image: np.ndarray) -> tuple[float, np.ndarray]:
        x = tf.convert_to_tensor(image[None].astype(np.float32))
        with tf.GradientTape() as tape:
            fmap, prob = grad_model(x, training=False)
            target = tf.reduce_sum(tf.cast(prob, tf.float32))
        grads = tape.gradient(target, fmap)
        fmap = tf.cast(fmap, tf.float32)[0].numpy()
        weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2))[0].numpy()
        cam = np.maximum(fmap @ weights, 0.0)
        top = float(cam.max())
        cam = cam / top if top > 0 else cam
        if edge:  # the map covers only the middle the model kept: put it back there
            cam = _into_frame(cam, size, edge)
        return float(np.asarray(prob).reshape(-1)[0]), cam

    return explain


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
