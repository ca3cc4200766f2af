"""The pixel preparation that comes before the network, in NumPy, for every runtime.

A saved model starts with layers that no fast inference runtime takes as they are:
histogram equalisation counts grey levels with `tf.math.bincount`, and the resize to a
second view is an antialiased `ScaleAndTranslate`. `models.runtimes.split_model` cuts
them off the front of the model and describes each input of the rest as a chain of
steps from the image (a `View`); `prepare` runs those chains here, the same function
for the TensorFlow path and the exported one, so the two can never prepare pixels
differently. Each step computes what its Keras layer computes (tests/unit/
test_pixel_views.py checks them against the layers): equalisation exactly, resizes to
float rounding.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np


class Step(NamedTuple):
    """One preparation step: `kind` is "equalize", "resize" or "crop"; `args` are
    (height, width, antialias) for a bilinear resize, (top, bottom, left, right) for a
    crop, () for equalisation."""

    kind: str
    args: tuple = ()


View = tuple[Step, ...]  # the steps from the (N, S, S, 1) image to one network input


def equalize(images: np.ndarray) -> np.ndarray:
    """Per-image histogram equalisation of grey levels 0..255, as
    `models.layers.HistogramEqualization` computes it (same float32 arithmetic, same
    round-half-to-even), on (N, H, W, 1) float32."""
    n = len(images)
    levels = np.clip(np.round(images), 0.0, 255.0).astype(np.int64).reshape(n, -1)
    offsets = levels + 256 * np.arange(n)[:, None]
    hist = np.bincount(offsets.ravel(), minlength=256 * n).astype(np.float32).reshape(n, 256)
    cdf = np.cumsum(hist, axis=1, dtype=np.float32)
    cdf_min = np.where(cdf > 0, cdf, np.float32(1e30)).min(axis=1)
    span = np.maximum(cdf[:, -1] - cdf_min, np.float32(1.0))
    lut = np.clip(np.round((cdf - cdf_min[:, None]) / span[:, None] * np.float32(255.0)), 0, 255)
    out = np.take_along_axis(lut.astype(np.float32), levels, axis=1)
    return out.reshape(images.shape)


_F = np.float32


@lru_cache(maxsize=32)
def _spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, lengths, weights (out, span)) of an antialiased bilinear (triangle
    kernel) resize, computed step by step in float32 as TensorFlow's ScaleAndTranslate
    computes them, so the resized pixels match to the last bit: the views are
    equalised after resizing, and a grey level a hair's breadth from .5 would round
    differently. Shrinking widens the kernel by the scale, so every input pixel counts."""
    scale = _F(out_size) / _F(in_size)
    inv_scale = _F(1.0 / np.float64(scale))
    kernel_scale = max(inv_scale, _F(1.0))
    inv_kernel_scale = _F(1.0) / kernel_scale
    span = min(2 * int(np.ceil(kernel_scale)) + 1, in_size)
    starts = np.zeros(out_size, dtype=np.int64)
    lengths = np.zeros(out_size, dtype=np.int64)
    weights = np.zeros((out_size, span), dtype=np.float32)
    for x in range(out_size):
        sample = (_F(x) + _F(0.5)) * inv_scale
        start = int(np.ceil(sample - kernel_scale - _F(0.5)))
        end = int(np.floor(sample + kernel_scale - _F(0.5)))
        start, end = min(max(start, 0), in_size - 1), min(max(end, 0), in_size - 1) + 1
        w = []
        total = _F(0.0)
        for source in range(start, end):
            pos = abs((_F(source) + _F(0.5) - sample) * inv_kernel_scale)
            w.append(_F(1.0) - pos if pos < _F(1.0) else _F(0.0))
            total = _F(total + w[-1])
        if abs(total) >= 1000.0 * np.finfo(np.float32).tiny:
            weights[x, : end - start] = [_F(v * (_F(1.0) / total)) for v in w]
        starts[x], lengths[x] = start, end - start
    return starts, lengths, weights


def _gather(images: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """One pass of the antialiased resize along `axis` (1: rows, 2: columns), summing
    each output's span in order from zero, in float32, as TensorFlow does."""
    starts, lengths, weights = _spans(images.shape[axis], out_size)
    shape = [1] * images.ndim
    shape[axis] = out_size
    out = np.zeros(images.shape[:axis] + (out_size,) + images.shape[axis + 1 :], np.float32)
    for k in range(weights.shape[1]):
        index = np.minimum(starts + k, images.shape[axis] - 1)  # past a span's end: weight 0
        w = np.where(k < lengths, weights[:, k], _F(0.0)).reshape(shape)
        out += np.take(images, index, axis=axis) * w
    return out


def _bilinear_axis(in_size: int, out_size: int):
    """Lower and upper source index and the fraction between them, per output pixel,
    as TensorFlow's ResizeBilinear computes them with half-pixel centres."""
    scale = _F(in_size) / _F(out_size)
    pos = (np.arange(out_size, dtype=np.float32) + _F(0.5)) * scale - _F(0.5)
    floor = np.floor(pos)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(pos).astype(np.int64), in_size - 1)
    return lower, upper, (pos - floor).astype(np.float32)


def _bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Plain bilinear resize (no antialiasing), `tf.image.resize`'s ResizeBilinear:
    across each row first, then between rows."""
    y0, y1, fy = _bilinear_axis(images.shape[1], height)
    x0, x1, fx = _bilinear_axis(images.shape[2], width)
    fx = fx[None, None, :, None]
    top_rows, bottom_rows = images[:, y0], images[:, y1]
    top = top_rows[:, :, x0] + (top_rows[:, :, x1] - top_rows[:, :, x0]) * fx
    bottom = bottom_rows[:, :, x0] + (bottom_rows[:, :, x1] - bottom_rows[:, :, x0]) * fx
    return top + (bottom - top) * fy[None, :, None, None]


@lru_cache(maxsize=32)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float32 matrix of the plain bilinear resize along one axis
    (half-pixel centres): `M @ x` resizes the rows of x as `_bilinear` does, to float
    rounding (not bit for bit: the sums run in another order). For masks and maps,
    where a threshold or a share follows; the networks' inputs use `resize`."""
    lower, upper, frac = _bilinear_axis(in_size, out_size)
    m = np.zeros((out_size, in_size), np.float32)
    np.add.at(m, (np.arange(out_size), lower), _F(1.0) - frac)
    np.add.at(m, (np.arange(out_size), upper), frac)
    m.setflags(write=False)
    return m


def resize(images: np.ndarray, height: int, width: int, antialias: bool) -> np.ndarray:
    """(N, H, W, C) float32 -> (N, height, width, C): bilinear, half-pixel centres;
    `keras.layers.Resizing` (and so `tf.image.resize`) with the same `antialias`."""
    images = images.astype(np.float32, copy=False)
    if images.shape[1:3] == (height, width):
        return images
    if not antialias:
        return _bilinear(images, height, width)
    return _gather(_gather(images, 1, height), 2, width)


def crop(images: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """`keras.layers.Cropping2D(((top, bottom), (left, right)))`."""
    h, w = images.shape[1:3]
    return images[:, top : h - bottom, left : w - right]


def apply(images: np.ndarray, step: Step) -> np.ndarray:
    if step.kind == "equalize":
        return equalize(images)
    if step.kind == "resize":
        return resize(images, *step.args)
    if step.kind == "crop":
        return crop(images, *step.args)
    raise ValueError(f"unknown preparation step {step.kind!r}")


def prepare(images: np.ndarray, views: tuple[View, ...]) -> list[np.ndarray]:
    """(N, S, S, 1) float32 in 0..255 -> one contiguous float32 array per network input.
    Views that share leading steps (a resize, then equalisation) compute them once."""
    done: dict[View, np.ndarray] = {(): np.asarray(images, dtype=np.float32)}
    for view in views:
        for i in range(1, len(view) + 1):
            if view[:i] not in done:
                done[view[:i]] = apply(done[view[: i - 1]], view[i - 1])
    return [np.ascontiguousarray(done[view], dtype=np.float32) for view in views]


def describe(views: tuple[View, ...]) -> list[str]:
    """Readable form of the views, for logs and the export record."""
    return [" -> ".join(["image", *(f"{s.kind}{list(s.args) or ''}" for s in v)]) for v in views]
