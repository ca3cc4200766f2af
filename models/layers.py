"""Layers of our own that saved models contain. Importing this module registers them,
so `keras.models.load_model` can rebuild any ScanQ model file."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="scanq")
class HistogramEqualization(keras.layers.Layer):
    """Per-image histogram equalisation of grey levels 0..255.

    Scans from different hospitals, scanners and paper figures differ in brightness and
    contrast for reasons that have nothing to do with disease; equalising each image
    removes much of that before the network sees it. Inside the model, so training,
    the worker and `scanq evaluate` can never prepare pixels differently.
    """

    def call(self, x):
        levels = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.int32)
        batch = tf.shape(levels)[0]
        flat = tf.reshape(levels, [batch, -1])
        # One bincount for the whole batch: image i counts into bins 256*i .. 256*i+255.
        offsets = flat + 256 * tf.range(batch)[:, None]
        hist = tf.math.bincount(
            tf.reshape(offsets, [-1]), minlength=256 * batch, maxlength=256 * batch,
            dtype=tf.float32,
        )  # fmt: skip
        cdf = tf.cumsum(tf.reshape(hist, [batch, 256]), axis=1)
        cdf_min = tf.reduce_min(tf.where(cdf > 0, cdf, tf.fill(tf.shape(cdf), 1e30)), axis=1)
        span = tf.maximum(cdf[:, -1] - cdf_min, 1.0)
        lut = tf.clip_by_value(tf.round((cdf - cdf_min[:, None]) / span[:, None] * 255.0), 0, 255)
        out = tf.gather(lut, flat, batch_dims=1)
        return tf.cast(tf.reshape(out, tf.shape(x)), x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="scanq")
class GlobalStdPooling2D(keras.layers.Layer):
    """Per-channel standard deviation over the spatial positions of a feature map.

    Average pooling says how much of a pattern an image holds; the spread says whether
    it is patchy or uniform, which is how ground-glass opacities differ on CT slices. As
    extra probe features it raised the CT probe's AUC by about 0.01 under repeated
    patient-grouped CV (bench/cv.py, `probe_288_std`). The small epsilon keeps the
    gradient finite for a constant channel (Grad-CAM differentiates through this).
    """

    def call(self, x):
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        var = tf.reduce_mean(tf.square(x - mean), axis=[1, 2])
        return tf.sqrt(var + 1e-6)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])
