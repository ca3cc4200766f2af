"""Choose training settings by patient-grouped cross-validation on the dev data.

Each fold's held-out patients are the test part; the remaining patients are split again
(grouped) into train and validation for early stopping, calibration and the threshold.
Prints one line per setting with the mean and spread of test AUC, sensitivity and
specificity over folds, and writes bench/out/cv_<modality>.json.

    python -m bench.cv --modality ct --folds 3 --settings head,finetune

With a few dozen negatives per fold, one partition into folds is a noisy measure:
`--repeats R` runs R differently seeded partitions (the same ones for every setting),
and the summary is over all R x folds test parts, with each repeat's mean beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from bench import DEFAULT_DATA, OUT
from models.dataset import grouped_folds, load_examples
from models.train import TrainConfig, train

SETTINGS = {
    "head": {"finetune_epochs": 0},
    "finetune": {"finetune_epochs": 10, "finetune_from": "block11_"},
    "finetune_deep": {"finetune_epochs": 10, "finetune_from": "block6_"},
    "deep_long": {"epochs": 8, "finetune_epochs": 25, "finetune_from": "block6_", "patience": 8},
    "deep_long_flip": {
        "epochs": 8,
        "finetune_epochs": 25,
        "finetune_from": "block6_",
        "patience": 8,
        "hflip": True,
    },
    "all_long": {"epochs": 8, "finetune_epochs": 25, "finetune_from": "block0_", "patience": 8},
    "deep_eq": {"finetune_epochs": 10, "finetune_from": "block6_", "equalize": True},
    "deep_long_eq": {
        "epochs": 8,
        "finetune_epochs": 25,
        "finetune_from": "block6_",
        "patience": 8,
        "equalize": True,
    },
    "probe": {"recipe": "probe", "equalize": True},
    "probe_256": {"recipe": "probe", "equalize": True, "input_size": 256},
    "probe_288": {"recipe": "probe", "equalize": True, "input_size": 288},
    # Each depth's spatial spread as well as its mean (models.layers.GlobalStdPooling2D).
    "probe_256_std": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 256,
        "probe_pool": "avg_std",
    },
    "probe_288_std": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 288,
        "probe_pool": "avg_std",
    },
    # The same backbone at two sizes, the second resized inside the model.
    "probe_352_288_std": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 352,
        "probe_pool": "avg_std",
        "probe_scales": (288,),
    },
    # The probe fitted on the training patients alone, as before the refit on training
    # + validation became the default (models.probe): the same two shipped recipes.
    "probe_256_fit_train": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 256,
        "probe_refit": False,
    },
    "probe_352_288_std_fit_train": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 352,
        "probe_pool": "avg_std",
        "probe_scales": (288,),
        "probe_refit": False,
    },
    # An unequalised, ImageNet-scaled look at 224 px through the same weights, beside
    # the equalised 256 px one (models.backbones.build_probe_features).
    "probe_256_inet224": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 256,
        "probe_imagenet_view": 224,
    },
    "probe_256_288": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 256,
        "probe_scales": (288,),
    },
    # Larger ImageNet networks of the same family (models.efficientnet_lite).
    "probe_lite1_256": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 256,
        "backbone": "efficientnet_lite1",
    },
    "probe_lite2_256": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 256,
        "backbone": "efficientnet_lite2",
    },
    "probe_lite2_288_std": {
        "recipe": "probe",
        "equalize": True,
        "input_size": 288,
        "probe_pool": "avg_std",
        "backbone": "efficientnet_lite2",
    },
    # Without the image's border, where source-specific marks are (bench/gradcam.py).
    "probe_crop10": {"recipe": "probe", "equalize": True, "crop": 0.10},
    "probe_crop15": {"recipe": "probe", "equalize": True, "crop": 0.15},
    # Which depths the probe pools: the deep half only, or the head alone.
    "probe_deep3": {
        "recipe": "probe",
        "equalize": True,
        "probe_layers": ("block14_add", "block15_project_bn", "head_relu"),
    },
    "probe_head": {"recipe": "probe", "equalize": True, "probe_layers": ("head_relu",)},
    # What ImageNet pretraining buys: the same recipes on a randomly initialised network.
    "probe_random": {"recipe": "probe", "equalize": True, "weights": None},
    "probe_288_random": {"recipe": "probe", "equalize": True, "input_size": 288, "weights": None},
    "random_start": {"weights": None, "epochs": 40, "patience": 10},
    "smallcnn": {"backbone": "smallcnn", "input_size": 128, "epochs": 40},
}


def fold_splits(examples, k: int, seed: int):
    folds = grouped_folds(examples, k, seed)
    for i, test in enumerate(folds):
        rest = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i]))
        sub = [examples[j] for j in rest]
        val = rest[grouped_folds(sub, 4, seed + 1 + i)[0]]
        yield np.setdiff1d(rest, val), val, test


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", required=True)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--settings", default="head,finetune")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="partitions, seeds seed..seed+R-1")
    args = ap.parse_args()
    examples = load_examples(args.data, args.modality)
    base = TrainConfig(modality=args.modality, epochs=args.epochs, patience=5, seed=args.seed)
    path = OUT / f"cv_{args.modality}.json"
    path.parent.mkdir(exist_ok=True)
    # Settings measured before keep their figures; a setting run again is replaced.
    out = json.loads(path.read_text()) if path.exists() else {}
    for name in args.settings.split(","):
        cfg = replace(base, **SETTINGS[name])
        folds = []
        partitions = [
            (rep, k, split)
            for rep in range(args.repeats)
            for k, split in enumerate(fold_splits(examples, args.folds, args.seed + rep))
        ]
        for rep, k, split in partitions:
            t0 = time.time()
            card = train(cfg, examples, split=split).card
            test = card["test"]
            folds.append(
                {
                    "auc": test["auc"],
                    "sensitivity": test["sensitivity"],
                    "specificity": test["specificity"],
                    "by_source_auc": {s: r["auc"] for s, r in test.get("by_source", {}).items()},
                    "epochs": card["epochs_run"],
                    "seconds": round(time.time() - t0),
                    "repeat": rep,
                }
            )
            print(f"{args.modality} {name} repeat {rep} fold {k}: {folds[-1]}", flush=True)
        summary = {
            m: [round(float(np.mean([f[m] for f in folds])), 4),
                round(float(np.std([f[m] for f in folds])), 4)]
            for m in ("auc", "sensitivity", "specificity")
        }  # fmt: skip
        per_repeat = [
            round(float(np.mean([f["auc"] for f in folds if f["repeat"] == rep])), 4)
            for rep in range(args.repeats)
        ]
        out[name] = {
            "summary_mean_sd": summary,
            "auc_per_repeat": per_repeat,
            "folds_per_repeat": args.folds,
            "folds": folds,
            "overrides": SETTINGS[name],
        }
        print(f"{args.modality} {name}: {summary}, AUC per repeat {per_repeat}", flush=True)
        path.write_text(json.dumps(out, indent=2))  # after each setting: a stop loses less


if __name__ == "__main__":
    main()
