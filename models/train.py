"""Train one classifier on a labelled set with a patient-level split, and save it as a
model version directory (models.version).

This module only orchestrates: decode the images (models.decode), split by patient, fit
with the configured recipe (models.recipes), calibrate the temperature and the
threshold on validation, score the test patients once, build the card (models.card)
and calibrate the out-of-distribution check (models.ood_calibration).

Run it directly to (re)build the shipped default models, e.g.
    python -m models.train --modality xray --data ../shared/data --out models/default/xray
The exact command is written into the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models import calibration, metrics
from models.card import operating_point, split_report
from models.dataset import Example, fingerprint, load_examples, split_groups, train_val_test
from models.decode import decode_examples
from models.fitting import ProgressFn, StopFn, predict
from models.ood_calibration import calibrate_version, other_modality_inputs
from models.recipes import get_recipe
from models.version import TrainResult, save_version

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run. With a pretrained backbone, phase 1 trains the head
    on a frozen backbone and phase 2 fine-tunes the top of the backbone at a lower rate;
    a randomly initialised backbone trains whole in one phase."""

    modality: str
    backbone: str = "efficientnet_lite0"
    input_size: int = 224
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 1e-3
    finetune_epochs: int = 15
    finetune_learning_rate: float = 1e-4
    # First layer (name prefix) that is fine-tuned; "" takes the backbone's top stage.
    finetune_from: str = ""
    dropout: float = 0.3
    patience: int = 6
    target_sensitivity: float = 0.9
    seed: int = 0
    weights: str | None = "auto"
    hflip: bool = False  # left-right flip augmentation
    equalize: bool = False  # per-image histogram equalisation inside the model
    crop: float = 0.0  # fraction cut from each edge inside the model (models.backbones._stem)
    # "finetune": head, then the backbone's top stage (augmented, by gradient descent);
    # "probe": a logistic regression on frozen pooled features (models.probe).
    recipe: str = "finetune"
    probe_c: float = 0.0  # the probe's inverse L2 strength; 0 chooses it on validation
    probe_layers: tuple[str, ...] = ()  # layers the probe pools; () = the backbone's own
    probe_pool: str = "avg"  # "avg_std" adds each depth's spatial spread (models.layers)
    # Further sizes the probe's backbone also sees the image at (models.backbones).
    probe_scales: tuple[int, ...] = ()
    # Size of a further unequalised, ImageNet-scaled view (models.backbones); 0: none.
    probe_imagenet_view: int = 0
    # Refit the probe on training + validation patients once C is chosen (models.probe).
    probe_refit: bool = True
    extra: dict = field(default_factory=dict)


def expected_steps(config: dict) -> int:
    """How many progress steps a run reports (models.recipes). Jobs show "step n of at
    most N"."""
    defaults = asdict(TrainConfig(modality=""))
    full = {**defaults, **config}
    return get_recipe(full["recipe"]).steps(full)


def train(
    cfg: TrainConfig,
    examples: list[Example],
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    split: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    other_modality: dict[str, np.ndarray] | None = None,
) -> TrainResult:
    """Patient-level train/val/test split (or the given one, e.g. a CV fold); early
    stopping, calibration and the threshold on validation; the test split is scored
    once, at the end. The out-of-distribution check is calibrated on the training and
    validation images; `other_modality` (named sets of model inputs) adds to the sets
    its flag rate is measured on."""
    fit = get_recipe(cfg.recipe).fit  # an unknown recipe fails before any decoding
    given = len(examples)
    examples, x, skipped = decode_examples(examples, cfg.input_size)
    if split is not None and len(examples) != given:
        raise ValueError("a fixed split needs every image to be readable")
    tr, va, te = split if split is not None else train_val_test(examples, seed=cfg.seed)
    y = np.asarray([ex.label for ex in examples])
    for name, part in (("training", tr), ("validation", va), ("test", te)):
        if len(set(y[part])) < 2:
            raise ValueError(
                f"the {name} split has only one label: the set has too few patients of "
                "each label to split by patient"
            )
    started = time.time()
    model, history, pretrained, p_val_raw = fit(
        cfg, x[tr], y[tr], x[va], y[va], progress, should_stop
    )
    temperature = calibration.fit_temperature(y[va], p_val_raw)
    p_val = calibration.apply_temperature(p_val_raw, temperature)
    threshold = metrics.threshold_for_sensitivity(y[va], p_val, cfg.target_sensitivity)
    p_test = calibration.apply_temperature(predict(model, x[te]), temperature)
    groups = split_groups(examples)
    fpr, tpr = metrics.roc_curve(y[te], p_test)

    def report(idx: np.ndarray, p: np.ndarray) -> dict:
        return split_report(y, idx, p, threshold, examples, groups)

    card = {
        "modality": cfg.modality,
        "backbone": cfg.backbone,
        "input_size": cfg.input_size,
        "threshold": threshold,
        "temperature": temperature,
        "config": asdict(cfg),
        "data_fingerprint": fingerprint(examples),
        "split": {
            "method": "stratified patient-grouped (patients joined by dup_group)",
            "seed": cfg.seed,
            "train": int(len(tr)),
            "val": int(len(va)),
            "test": int(len(te)),
            # the validation report is the first fit's, before a probe's refit
            "model_fit_on": history.get("fit_on", ["training"])[0],
        },
        "validation": report(va, p_val),
        "test": report(te, p_test),
        "roc_test": {
            "fpr": fpr.round(4).tolist(),
            "tpr": tpr.round(4).tolist(),
            "operating_point": operating_point(y[te], p_test, threshold),
        },
        "skipped_unreadable": skipped,
        "pretrained": pretrained,
        "epochs_run": len(history.get("loss", history.get("c", []))),
        "history": {
            k: [v if isinstance(v, str) else round(float(v), 5) for v in vals]
            for k, vals in history.items()
        },
        "train_seconds": round(time.time() - started, 1),
    }
    fitted, card["ood"] = calibrate_version(
        model, x, groups, np.concatenate([tr, va]), te, other_modality
    )
    held_out = [examples[i] for i in te]
    seen = [examples[i] for i in np.concatenate([tr, va])]
    return TrainResult(model=model, card=card, ood=fitted, test_examples=held_out,
                       seen_examples=seen)  # fmt: skip


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--modality", required=True, choices=["xray", "ct"])
    ap.add_argument("--data", required=True, help="dev data root or a covid/non_covid folder")
    ap.add_argument("--out", required=True)
    defaults = TrainConfig(modality="xray")
    for name in ("backbone", "input_size", "epochs", "batch_size", "learning_rate",
                 "finetune_epochs", "finetune_learning_rate", "finetune_from", "dropout",
                 "patience", "seed", "recipe", "probe_c", "probe_pool",
                 "probe_imagenet_view"):  # fmt: skip
        value = getattr(defaults, name)
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    ap.add_argument("--probe-scales", type=_sizes, default=(),
                    help="further sizes the probe also pools at, e.g. 288,320")  # fmt: skip
    ap.add_argument("--hflip", action="store_true", help="left-right flip augmentation")
    ap.add_argument("--equalize", action="store_true", help="histogram equalisation in the model")
    ap.add_argument("--cv-report", help="bench/cv.py output whose figures go into the card")
    ap.add_argument("--cv-setting", help="the setting of --cv-report this run follows")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    own = ("data", "out", "cv_report", "cv_setting")
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k not in own})
    examples = load_examples(args.data, args.modality)
    log.info("%d examples", len(examples))
    other = other_modality_inputs(Path(args.data), args.modality, cfg.input_size)
    result = train(cfg, examples, progress=lambda e, logs: log.info("epoch %d %s", e, logs),
                   other_modality=other)  # fmt: skip
    if args.cv_report:
        cv = json.loads(Path(args.cv_report).read_text())[args.cv_setting]
        result.card["cross_validation"] = {"setting": args.cv_setting, **cv}
    argv_rel = [a for a in (argv if argv is not None else sys.argv[1:])]
    command = "python -m models.train " + shlex.join(argv_rel)
    save_version(result, Path(args.out), command)
    log.info(
        "test: %s",
        json.dumps({k: result.card["test"][k] for k in ("auc", "sensitivity", "specificity")}),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
