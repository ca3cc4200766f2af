"""A small U-Net for lung fields: three levels, 8 to 64 channels, ~0.12 M weights.

Lungs are large, smooth regions, so 128 px and a shallow net are enough; the grey levels
are equalised inside the model (models.layers), as the classifiers' are, so the saved
file takes the same 0..255 input the worker already has.
"""

from __future__ import annotations


def build_unet(size: int = 128, base: int = 8, depth: int = 3):
    import keras
    from keras import layers

    from models.layers import HistogramEqualization

    def block(x, ch: int):
        for _ in range(2):
            x = layers.Conv2D(ch, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        return x

    inp = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1 / 255.0)(HistogramEqualization(name="equalize")(inp))
    skips = []
    for level in range(depth):
        x = block(x, base * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = block(x, base * 2**depth)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(base * 2**level, 2, strides=2, padding="same")(x)
        x = block(layers.Concatenate()([x, skips[level]]), base * 2**level)
    out = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="lung")(x)
    return keras.Model(inp, out, name="lung_unet")
