"""Train the lung segmenter on the dev set's masks and write it with its card.

    python -m models.lung.train --data ../shared/data --out models/default/lung

Split by patient (models.lung.data); the epoch kept is the one with the best validation
Dice; the card reports Dice and IoU on the held-out test patients per mask source and
per label, the predicted lung fraction per label (a check on the v7labs confound: every
v7labs mask is on a COVID image), and the cost per image.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from models.lung import metrics
from models.lung.data import arrays, mask_examples, split
from models.lung.segmenter import THRESHOLD, WEIGHTS


def _augmenter(seed: int):
    """Flips, shifts and zooms applied alike to image and mask (stacked as channels)."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.06, 0.06, fill_mode="constant", seed=seed),
            keras.layers.RandomZoom((-0.12, 0.12), fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
        ]
    )


def _loss(y, p):
    import keras
    from keras import ops

    inter = ops.sum(y * p, axis=(1, 2, 3))
    dice = (2 * inter + 1) / (ops.sum(y, axis=(1, 2, 3)) + ops.sum(p, axis=(1, 2, 3)) + 1)
    return keras.losses.binary_crossentropy(y, p) + ops.mean(1 - dice)


def evaluate(segmenter, pairs, x, y) -> dict:
    """Dice / IoU per mask source and per label on (x, y), of the masks the shipped
    segmenter gives (models.lung.segmenter, its clean-up included)."""
    pred = segmenter.masks(x)
    scores = [metrics.dice_iou(p, t[..., 0]) for p, t in zip(pred, y, strict=True)]
    label = {1: "covid", 0: "non_covid"}
    return {
        "by_source": metrics.summarise(scores, [p.mask_source for p in pairs]),
        "by_label": metrics.summarise(scores, [label[p.image.label] for p in pairs]),
        "by_source_label": metrics.summarise(
            scores, [f"{p.mask_source}/{label[p.image.label]}" for p in pairs]
        ),
    }


class _Raw:
    """The net being trained seen as a segmenter (for the validation Dice per epoch)."""

    def __init__(self, model):
        self.model = model

    def masks(self, x):
        return self.model.predict(x, batch_size=32, verbose=0)[..., 0] >= THRESHOLD


def train(data: Path, size: int, epochs: int, base: int, depth: int, seed: int) -> tuple:
    import keras
    import tensorflow as tf

    from models.lung.unet import build_unet

    keras.utils.set_random_seed(seed)
    parts = split(mask_examples(data), seed=seed)
    xy = {name: arrays(pairs, size) for name, pairs in parts.items()}
    model = build_unet(size, base, depth)
    steps = epochs * int(np.ceil(len(xy["train"][0]) / 16))
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
                  loss=_loss)  # fmt: skip
    aug = _augmenter(seed)

    def augment(x, y):
        both = aug(tf.concat([x, y], axis=-1), training=True)
        return both[..., :1], tf.cast(both[..., 1:] >= 0.5, tf.float32)

    x_tr, y_tr = xy["train"]
    ds = (
        tf.data.Dataset.from_tensor_slices((x_tr, y_tr))
        .shuffle(len(x_tr), seed=seed)
        .batch(16)
        .map(augment)
        .prefetch(2)
    )
    x_va, y_va = xy["val"]
    best, history = (-1.0, None), []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        fit = model.fit(ds, epochs=1, verbose=0)
        val = evaluate(_Raw(model), parts["val"], x_va, y_va)["by_source"]["all"]["dice"]
        history.append({"epoch": epoch, "loss": round(float(fit.history["loss"][0]), 4),
                        "val_dice": val})  # fmt: skip
        print(f"epoch {epoch}: loss {history[-1]['loss']} val dice {val}", flush=True)
        if val > best[0]:
            best = (val, [w.copy() for w in model.get_weights()], epoch)
    model.set_weights(best[1])
    seconds = time.perf_counter() - t0
    return model, {"history": history, "best_epoch": best[2], "train_seconds": round(seconds, 1)}


def cost_per_image_ms(model, size: int, n: int = 64, batch: int = 32) -> float:
    """Milliseconds per image of a batched forward pass on this machine."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False))
    x = tf.random.uniform((batch, size, size, 1), 0, 255)
    call(x)
    t0 = time.perf_counter()
    for _ in range(n // batch):
        call(x).numpy()
    return round((time.perf_counter() - t0) * 1000 / n, 2)


def lung_fractions(segmenter, pairs, x, y) -> dict:
    """Mean lung fraction per label, predicted and in the masks: a segmenter that learnt
    the v7labs style on COVID images would draw bigger lungs on them than on others."""
    pred = segmenter.masks(x)
    out: dict = {"predicted": {}, "masks": {}}
    for name, lab in (("covid", 1), ("non_covid", 0)):
        sel = [i for i, p in enumerate(pairs) if p.image.label == lab]
        if sel:
            out["predicted"][name] = round(float(pred[sel].mean()), 4)
            out["masks"][name] = round(float(y[sel].mean()), 4)
    return out


def measure(folder: Path, data: Path, seed: int, fit: dict) -> dict:
    """The card of the segmenter saved in `folder`, measured on its held-out patients."""
    from models.lung.segmenter import LungSegmenter

    segmenter = LungSegmenter(folder)
    parts = split(mask_examples(data), seed=seed)
    x, y = arrays(parts["test"], segmenter.size)
    return {
        "what": "lung segmenter (U-Net) for chest X-rays",
        "input_size": segmenter.size,
        "weights": int(segmenter.model.count_params()),
        "threshold": THRESHOLD,
        "seed": seed,
        "split": {
            k: {
                "pairs": len(v),
                "images": len({p.image.path for p in v}),
                "patients": len({p.image.patient_id for p in v}),
            }
            for k, v in parts.items()
        },
        "test_patients": sorted({p.image.patient_id for p in parts["test"]}),
        "test": evaluate(segmenter, parts["test"], x, y),
        "test_lung_fraction": lung_fractions(segmenter, parts["test"], x, y),
        "cost_ms_per_image": cost_per_image_ms(segmenter.model, segmenter.size),
        **fit,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="models/default/lung")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--base", type=int, default=8, help="channels of the first level")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure-only", action="store_true",
                    help="measure the segmenter already in --out again; no training")  # fmt: skip
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.measure_only:
        old = json.loads((out / "card.json").read_text())
        fit = {k: old[k] for k in ("command", "history", "best_epoch", "train_seconds")}
    else:
        from models.lung.unet import build_unet

        model, fit = train(Path(args.data), args.size, args.epochs, args.base, args.depth,
                           args.seed)  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        bare = build_unet(args.size, args.base, args.depth)  # no optimizer state in the file
        bare.set_weights(model.get_weights())
        bare.save(out / WEIGHTS)
        words = argv if argv is not None else sys.argv[1:]
        fit["command"] = "python -m models.lung.train " + shlex.join(words)
    card = measure(out, Path(args.data), args.seed, fit)
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (out / "MODEL_CARD.md").write_text(render_card(card))
    print(json.dumps(card["test"]["by_source"], indent=1))
    return 0


def render_card(card: dict) -> str:
    def rows(table: dict) -> str:
        return "\n".join(
            f"| {k} | {v['n']} | {v['dice']:.3f} | {v['dice_p10']:.3f} | {v['iou']:.3f} |"
            for k, v in table.items()
        )

    head = "| group | masks | Dice | Dice, 10th percentile | IoU |\n|---|---:|---:|---:|---:|"
    s = card["split"]
    frac = card["test_lung_fraction"]
    return f"""# Lung segmenter (chest X-ray)

Research use only, not for diagnostic use.

A U-Net ({card["weights"]:,} weights, {card["input_size"]} px input, grey levels equalised
inside the model), trained by `{card["command"].strip()}`
on the dev set's lung masks (v7labs polygons and lungVAE masks of the ieee8023 images).

- Split by patient, `dup_group` kept together: {s["train"]["images"]} / {s["val"]["images"]} / \
{s["test"]["images"]} images ({s["train"]["patients"]} / {s["val"]["patients"]} / \
{s["test"]["patients"]} patients) for training / validation / test.
- The epoch kept ({card["best_epoch"]}) had the best validation Dice.
- Only the two largest connected regions of its output are kept
  (models.lung.segmenter.two_lungs); the figures below are of those masks.
- Use: measuring what the X-ray classifiers look at (the heat map's share inside the
  lungs, the shortcut report); never a classifier's feature.

## Held-out test patients (threshold {card["threshold"]})

By mask source:

{head}
{rows(card["test"]["by_source"])}

By label:

{head}
{rows(card["test"]["by_label"])}

By source and label:

{head}
{rows(card["test"]["by_source_label"])}

Confound check: every v7labs mask is on a COVID image. Mean lung fraction of the test
images, predicted {json.dumps(frac["predicted"])} against the masks'
{json.dumps(frac["masks"])}.

## Cost

{card["cost_ms_per_image"]} ms per image (batches of 32, on the CPU it was measured on, which
other jobs shared: less on an idle one); training took {card["train_seconds"]} s.
"""


if __name__ == "__main__":
    raise SystemExit(main())
