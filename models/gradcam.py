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
once, not again through every depth that is pooled after it.

When the head is linear in the pooled features (a probe's standardisation and logistic
unit; a fine-tuned model's dropout, inactive at inference, and dense unit), those
gradients are the head's weights times one positive number per image (the sigmoid's
slope), which the map's 0..1 scaling removes. The map is then a forward computation on
the same feature maps (`maps_output`): scoring gets it from its own model call, through
TensorFlow or the ONNX export, with no backward pass (what `lung_heat_share` needs for
every X-ray). `batch_explainer` keeps the gradient path for any other head.
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
        raw = []
        for n in range(len(images)):
            cams = []
            for j, fmap in enumerate(fmaps):
                k = spread_at.get(j)
                extra = () if k is None else (spreads[k][n], g_spreads[k][n])
                cams.append(position_shares(fmap[n], g_means[j][n], *extra))
            h, w = max(c.shape for c in cams)
            # each map as a density on the finest grid: its total (its share of the score) kept
            raw.append(sum(_resized(c, h, w) * (c.size / (h * w)) for c in cams))
        probs = np.asarray(tf.cast(prob, tf.float32)).reshape(len(images), -1)[:, 0]
        if not raw:
            return probs, np.zeros((0, size, size), np.float32)
        return probs, finish_maps(np.stack(raw), size, edge)

    return explain_batch


def finish_maps(raw: np.ndarray, size: int, edge: int = 0) -> np.ndarray:
    """Heat maps (N, h, w) in 0..1 from the summed position shares (N, h, w): what
    lowered the score dropped, each map scaled to its peak (so any positive factor per
    image, such as the sigmoid's slope, drops out), and, for a model that cuts `edge`
    pixels off each side of its `size` input, put back into the whole frame."""
    out = []
    for cam in np.asarray(raw, dtype=np.float32):
        cam = np.maximum(cam, 0.0)
        top = float(cam.max())
        cam = cam / top if top > 0 else cam
        if edge:  # the map covers only the middle the model kept: put it back there
            cam = _into_frame(cam, size, edge)
        out.append(cam)
    return np.stack(out) if out else np.zeros((0, size, size), np.float32)


def map_frame(model) -> tuple[int, int]:
    """(input size, border crop) that `finish_maps` needs for this model's maps."""
    return int(model.input_shape[1]), _border_crop(model)


# Layers that may lie between the pooled features and the final unit while the score
# stays linear in them at inference (dropout is inactive then).
_LINEAR_HEAD = ("InputLayer", "Concatenate", "Normalization", "Dropout")


def head_weights(model) -> list[tuple[np.ndarray, np.ndarray | None]] | None:
    """For each pooled map of `_target_layers`, the weights of its mean (and of its
    spread) in the final unit's logit, when the head is linear in the pooled features;
    None for any other head (then only the gradient path explains it)."""
    import keras
    import tensorflow as tf

    try:
        out = model.get_layer("covid")
    except ValueError:
        return None
    activation = getattr(out.activation, "__name__", "")
    if not isinstance(out, keras.layers.Dense) or out.units != 1:
        return None
    if activation not in ("sigmoid", "linear") or model.outputs[0] is not out.output:
        return None
    targets = _target_layers(model)
    pooled = [avg.output for avg, _s in targets] + [s.output for _a, s in targets if s is not None]
    try:
        head = keras.Model(pooled, out.input)
    except ValueError:  # the unit reads something besides the pooled features
        return None
    if any(type(layer).__name__ not in _LINEAR_HEAD for layer in head.layers):
        return None
    kernel = tf.constant(np.asarray(out.kernel, np.float32)[:, :1])
    zeros = [tf.zeros((1, int(t.shape[-1])), tf.float32) for t in pooled]
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        logit = tf.matmul(tf.cast(head(zeros, training=False), tf.float32), kernel)
    grads = [np.asarray(g, np.float32)[0] for g in tape.gradient(logit, zeros)]
    means, spreads = grads[: len(targets)], iter(grads[len(targets) :])
    return [
        (g, None if s is None else next(spreads)) for g, (_a, s) in zip(means, targets, strict=True)
    ]


def maps_output(model):
    """The model's heat maps before `finish_maps`, (N, h, w) on its finest pooled grid,
    as a symbolic output computed forward from the same feature maps the score pools
    (`position_shares` with the head's weights for gradients), or None when the head is
    not linear in the pooled features."""
    from keras import ops

    weights = head_weights(model)
    if weights is None:
        return None
    targets = _target_layers(model)
    fmaps = [ops.cast(avg.input, "float32") for avg, _s in targets]
    h, w = max(tuple(int(d) for d in f.shape[1:3]) for f in fmaps)
    total = None
    for fmap, (_avg, std), (w_mean, w_spread) in zip(fmaps, targets, weights, strict=True):
        fh, fw = int(fmap.shape[1]), int(fmap.shape[2])
        shares = ops.matmul(fmap, ops.convert_to_tensor(w_mean[:, None] / (fh * fw)))
        if std is not None:
            spread = ops.cast(std.output, "float32")[:, None, None, :]
            dev2 = ops.square(fmap - ops.mean(fmap, axis=(1, 2), keepdims=True))
            scaled = dev2 * ops.convert_to_tensor(w_spread / (fh * fw)) / spread
            shares = shares + ops.sum(scaled, axis=-1, keepdims=True)
        shares = ops.squeeze(shares, axis=-1)
        if (fh, fw) != (h, w):  # rows, then columns: (h, fh) @ (N, fh, fw) @ (fw, w)
            rows, cols = _upsampling(fh, h), _upsampling(fw, w).T
            shares = ops.matmul(ops.matmul(ops.convert_to_tensor(rows), shares),
                                ops.convert_to_tensor(cols))  # fmt: skip
        shares = shares * (fh * fw / (h * w))
        total = shares if total is None else total + shares
    return total


def _upsampling(size: int, out: int) -> np.ndarray:
    """(out, size) matrix of the bilinear resize with half-pixel centres (PIL's and
    TensorFlow's when enlarging): a matrix product, which every runtime runs alike, where
    tf2onnx's Resize from scales rounded a 9 -> 22 grid to 21."""
    from models.pixel_views import _bilinear_axis

    lower, upper, frac = _bilinear_axis(size, out)
    matrix = np.zeros((out, size), np.float32)
    np.add.at(matrix, (np.arange(out), lower), 1.0 - frac)
    np.add.at(matrix, (np.arange(out), upper), frac)
    return matrix


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
