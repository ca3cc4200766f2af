"""Train one classifier on a labelled set with a patient-level split, and save it as a
model version directory (models.version).

This module only orchestrates: decode the images (models.decode), cut them to their lung
fields for a `lung_crop` run (models.lung.field), split by patient, fit with the
configured recipe (models.recipes), calibrate the temperature and the
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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from models import calibration, metrics
from models.card import operating_point, split_report
from models.dataset import Example, fingerprint, load_examples, split_groups, train_val_test
from models.decode import decode_examples
from models.fitting import ProgressFn, StopFn, predict
from models.lung.field import LungField
from models.ood_calibration import calibrate_version, other_modality_inputs
from models.recipes import get_recipe
from models.training_options import (
    OPTIONS,
    Option,
    OptionError,
    TrainConfig,
    check_config,
    check_modality,
    defaults,
)
from models.version import TrainResult, save_version

log = logging.getLogger(__name__)


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
    check_modality(asdict(cfg), cfg.modality)  # a library call is held to the rule too
    given = len(examples)
    examples, x_full, skipped = decode_examples(examples, cfg.input_size)
    # A lung-crop run sees every image cut to its lung field; x_full stays for the
    # shortcut report, which hides or keeps the lungs on the whole image before cutting.
    field = LungField(cfg.lung_crop) if cfg.lung_crop else None
    x = x_full if field is None else field.crop(x_full)[0]
    if field is not None and other_modality:  # scored as they would be: cut by the segmenter
        other_modality = {name: field.crop(v)[0] for name, v in other_modality.items()}
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
    if cfg.modality == "xray":  # AUC with the lungs hidden / kept alone (models.lung)
        from models.lung.shortcut import version_shortcut

        card["shortcut"] = version_shortcut(model, x_full[te], y[te], [groups[i] for i in te],
                                            margin=cfg.lung_crop)  # fmt: skip
    fitted, card["ood"] = calibrate_version(
        model, x, groups, np.concatenate([tr, va]), te, other_modality
    )
    held_out = [examples[i] for i in te]
    seen = [examples[i] for i in np.concatenate([tr, va])]
    return TrainResult(model=model, card=card, ood=fitted, test_examples=held_out,
                       seen_examples=seen)  # fmt: skip


def _add_argument(ap: argparse.ArgumentParser, option: Option) -> None:
    """One flag per option (models.training_options); only the flags given are set."""

    def parse(text: str):
        try:
            return option.parse(text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    if option.kind == "bool":
        ap.add_argument(option.flag, action=argparse.BooleanOptionalAction,
                        default=argparse.SUPPRESS, help=option.describe())  # fmt: skip
    else:
        default = option.format(option.default)
        ap.add_argument(option.flag, type=parse, default=argparse.SUPPRESS,
                        help=f"{option.describe()}; default {default!r}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--modality", required=True, choices=["xray", "ct"])
    ap.add_argument("--data", required=True, help="dev data root or a covid/non_covid folder")
    ap.add_argument("--out", required=True)
    for option in OPTIONS.values():
        _add_argument(ap, option)
    ap.add_argument("--cv-report", help="bench/cv.py output whose figures go into the card")
    ap.add_argument("--cv-setting", help="the setting of --cv-report this run follows")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    given = {k: v for k, v in vars(args).items() if k in OPTIONS}
    try:
        config = check_config({**defaults(), **given}, given, modality=args.modality)
    except OptionError as exc:
        ap.error(str(exc))
    cfg = TrainConfig(modality=args.modality, **config)
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
