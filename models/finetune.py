"""The "finetune" recipe: train a head on a frozen pretrained backbone, then fine-tune
the backbone's top stage at a lower rate (augmented, by gradient descent); a randomly
initialised backbone trains whole in one phase."""

from __future__ import annotations

import time

import numpy as np

from models.fitting import Fitted, ProgressFn, StopFn, predict

# A cancel is checked this often within an epoch, so it lands quickly.
STOP_CHECK_SECONDS = 10.0


def fit_finetune(
    cfg,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Fitted:
    """Early stopping and learning-rate plateaus on validation AUC; the fine-tuned
    weights are kept only if they beat the head-only model on validation."""
    import keras
    import tensorflow as tf

    from models.backbones import BACKBONES, build_classifier

    keras.utils.set_random_seed(cfg.seed)
    model, features, pretrained = build_classifier(
        cfg.backbone,
        cfg.input_size,
        cfg.dropout,
        cfg.weights,
        hflip=cfg.hflip,
        equalize=cfg.equalize,
        crop=cfg.crop,
    )
    # Balanced class weights: the X-ray set is about 4 covid : 1 non_covid.
    pos = max(float(y_train.mean()), 1e-6)
    weights = np.where(y_train == 1, 0.5 / pos, 0.5 / max(1 - pos, 1e-6)).astype("float32")
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train.astype("float32"), weights))
        .shuffle(len(x_train), seed=cfg.seed, reshuffle_each_iteration=True)
        .batch(cfg.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = (
        tf.data.Dataset.from_tensor_slices((x_val, y_val.astype("float32")))
        .batch(64)
        .prefetch(tf.data.AUTOTUNE)
    )
    history: dict[str, list] = {}
    epoch_offset = 0

    class Report(keras.callbacks.Callback):
        """Per-epoch progress, and a stop check every few seconds within an epoch so a
        cancel lands quickly and a long epoch still shows the run is alive."""

        last_check = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            if should_stop and time.monotonic() - Report.last_check > STOP_CHECK_SECONDS:
                Report.last_check = time.monotonic()
                if should_stop():
                    self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if progress:
                progress(epoch_offset + epoch + 1, {k: float(v) for k, v in (logs or {}).items()})
            if should_stop and should_stop():
                self.model.stop_training = True

    def run_phase(lr: float, epochs: int, phase: str) -> float:
        nonlocal epoch_offset
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(name="auc")],
        )
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=cfg.patience, restore_best_weights=True
        )
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor="val_auc", mode="max", factor=0.5, patience=max(2, cfg.patience // 2)
        )
        h = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            callbacks=[stopper, plateau, Report()],
            verbose=0,
            shuffle=False,  # train_ds reshuffles itself every epoch
        )
        for k, v in h.history.items():
            history.setdefault(k, []).extend(v)
        history.setdefault("phase", []).extend([phase] * len(h.history.get("loss", [])))
        epoch_offset += len(h.history.get("loss", []))
        return max(h.history.get("val_auc", [0.0]))

    if not pretrained:
        run_phase(cfg.learning_rate, cfg.epochs, "full")
        return Fitted(model, history, pretrained, predict(model, x_val))
    features.trainable = False
    best = run_phase(cfg.learning_rate, cfg.epochs, "head")
    if cfg.finetune_epochs > 0 and not (should_stop and should_stop()):
        kept = model.get_weights()
        features.trainable = True
        start = cfg.finetune_from or BACKBONES[cfg.backbone].finetune_from
        if not any(layer.name.startswith(start) for layer in features.layers):
            raise ValueError(f"no layer of {cfg.backbone} starts with {start!r}")
        unfrozen = False
        for layer in features.layers:
            unfrozen = unfrozen or layer.name.startswith(start)
            # BatchNorm stays frozen: its ImageNet statistics beat a few hundred scans'.
            layer.trainable = unfrozen and not isinstance(layer, keras.layers.BatchNormalization)
        tuned = run_phase(cfg.finetune_learning_rate, cfg.finetune_epochs, "finetune")
        if tuned < best:  # fine-tuning did not help on validation: keep the head-only model
            model.set_weights(kept)
    return Fitted(model, history, pretrained, predict(model, x_val))
