"""Class activation maps: which regions drove a score.

A probe's score is a linear function of pooled feature maps: each depth's spatial mean
and, for some models, its spatial spread, at each size the model sees the image at.
Both pools split exactly over positions (a mean is the sum of A(i,j)/hw; a spread is
the sum of (A(i,j) - mean)^2 / (hw * spread)), so the map gives each position its share
of the score: the pooled features' gradients (the head's weights, through the final
sigmoid) times those per-position terms, summed over channels, depths and sizes on
the finest grid. For a fine-tuned model, one average-pooled map feeding a dense head,
this is Grad-CAM (Selvaraju et al., 2017) of its last feature map. Taking the gradient
at the pooled features rather than at each feature map counts a deep layer's effect
once, not again through every depth that is pooled after it. It is computed in the
worker on request, not for every scored image: it needs a backward pass per image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _target_layers(model) -> list[tuple]:
    """(average pooling layer, the spread pooling layer of the same map or None) for
    every pooled feature map of the model. models.backbones names a map's pools
    `pool<tag>_<layer>` and `std<tag>_<layer>`; a fine-tuned model has one, "pool"."""
    import keras

    pools = [ly for ly in model.layers if isinstance(ly, keras.layers.GlobalAveragePooling2D)]
    if not pools:
        raise ValueError("the model has no pooled feature map to explain")
    names = {layer.name for layer in model.layers}
    twin = lambda name: "std" + name.removeprefix("pool")  # noqa: E731
    return [(p, model.get_layer(twin(p.name)) if twin(p.name) in names else None) for p in pools]


def explainer(model):
    """A function image (S, S, 1) float32 0..255 -> (probability, map (h, w) in 0..1)."""
    explain_batch = batch_explainer(model)

    def explain(image: np.ndarray) -> tuple[float, np.ndarray]:
        probs, cams = explain_batch(image[None])
        return float(probs[0]), cams[0]

    return explain


def batch_explainer(model):
    """A function images (N, S, S, 1) float32 0..255 -> (probabilities (N,), maps
    (N, h, w) in 0..1), one forward pass for the batch: each image's score depends on
    its own pooled features only, so the gradient of the batch's sum gives every image
    its own gradients (what scoring uses to measure each map's share in the lungs)."""
    import keras
    import tensorflow as tf

    targets = _target_layers(model)
    spread = [i for i, (_avg, std) in enumerate(targets) if std is not None]
    spread_at = {j: k for k, j in enumerate(spread)}  # map j -> its spread output k
    grad_model = keras.Model(
        model.inputs,
        [
            [avg.input for avg, _std in targets],
            [avg.output for avg, _std in targets],
            [targets[i][1].output for i in spread],
            model.outputs[0],
        ],
    )
    size, edge = int(model.input_shape[1]), _border_crop(model)

    @tf.function(reduce_retracing=True)
    def forward(x):
        with tf.GradientTape() as tape:
            fmaps, means, spreads, prob = grad_model(x, training=False)
            target = tf.reduce_sum(tf.cast(prob, tf.float32))
        g_means, g_spreads = tape.gradient(target, [means, spreads])
        return fmaps, means, spreads, g_means, g_spreads, prob

    def explain_batch(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
        fmaps, _means, spreads, g_means, g_spreads, prob = forward(x)
        as_np = lambda t: tf.cast(t, tf.float32).numpy()  # noqa: E731
        fmaps, g_means = [as_np(f) for f in fmaps], [as_np(g) for g in g_means]
        spreads, g_spreads = [as_np(s) for s in spreads], [as_np(g) for g in g_spreads]
        out = []
        for n in range(len(images)):
            cams = []
            for j, fmap in enumerate(fmaps):
                k = spread_at.get(j)
                extra = () if k is None else (spreads[k][n], g_spreads[k][n])
                cams.append(position_shares(fmap[n], g_means[j][n], *extra))
            h, w = max(c.shape for c in cams)
            # each map as a density on the finest grid: its total (its share of the score) kept
            cam = np.maximum(sum(_resized(c, h, w) * (c.size / (h * w)) for c in cams), 0.0)
            top = float(cam.max())
            cam = cam / top if top > 0 else cam
            if edge:  # the map covers only the middle the model kept: put it back there
                cam = _into_frame(cam, size, edge)
            out.append(cam)
        probs = np.asarray(tf.cast(prob, tf.float32)).reshape(len(images), -1)[:, 0]
        return probs, np.stack(out) if out else np.zeros((0, size, size), np.float32)

    return explain_batch


def position_shares(
    fmap: np.ndarray,
    g_mean: np.ndarray,
    spread: np.ndarray | None = None,
    g_spread: np.ndarray | None = None,
) -> np.ndarray:
    """(h, w) shares of `g_mean . mean(fmap)` (+ `g_spread . spread`, with `spread` the
    pooled spread as the model computed it) that sum to it: what each position of the
    (h, w, channels) map adds to the score through its pools."""
    area = fmap.shape[0] * fmap.shape[1]
    shares = fmap @ g_mean / area
    if spread is not None:
        dev2 = np.square(fmap - fmap.mean(axis=(0, 1)))
        shares = shares + dev2 @ (g_spread / spread) / area
    return shares


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
