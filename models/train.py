"""Train one classifier on a labelled set with a patient-level split, and save it as a
model version directory (model.keras + card.json + MODEL_CARD.md).

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from models import calibration, metrics
from models.dataset import Example, fingerprint, load_examples, split_groups, train_val_test
from models.ood_calibration import calibrate_version, other_modality_inputs
from models.ood_calibration import render_section as render_ood_section
from models.preprocess import ImageError, load_for_model

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, dict], None]
STOP_CHECK_SECONDS = 10.0
NORMAL_FINDINGS = {"no finding", "normal", "noncovid", "non_covid"}


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
    """How many progress steps a run reports: epochs for fine-tuning, one per
    regularisation strength tried for a probe. Jobs show "step n of at most N"."""
    if config.get("recipe") == "probe":
        from models.probe import C_GRID

        return 1 if config.get("probe_c") else len(C_GRID)
    return int(config.get("epochs", 30)) + int(config.get("finetune_epochs", 15))


def load_arrays(examples: list[Example], size: int) -> np.ndarray:
    return np.stack([load_for_model(ex.path, size) for ex in examples])


def decode_examples(
    examples: list[Example], size: int
) -> tuple[list[Example], np.ndarray, list[dict]]:
    """Decode every image once; unreadable ones are left out and listed, so one broken
    file does not sink a training run."""
    kept, arrays, skipped = [], [], []
    for ex in examples:
        try:
            arrays.append(load_for_model(ex.path, size))
        except (ImageError, OSError) as exc:
            skipped.append({"file": ex.path.name, "error": str(exc)})
            continue
        kept.append(ex)
    if not arrays:
        raise ValueError("no readable image in the training set")
    return kept, np.stack(arrays), skipped


class Fitted(NamedTuple):
    """What a recipe's fit returns. `val_scores` are validation probabilities from a
    model that never trained on the validation patients: the temperature, the threshold
    and the validation report rest on them, even when `model` itself has seen them
    (a probe refitted on training + validation)."""

    model: object
    history: dict
    pretrained: bool
    val_scores: np.ndarray


def _fit(
    cfg: TrainConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
):
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


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0)).reshape(-1)


@dataclass
class TrainResult:
    model: object
    card: dict
    ood: object = None  # models.ood.OODModel, saved beside the model
    # The held-out patients' images: models.gate scores the champion on the same ones.
    test_examples: list[Example] = field(default_factory=list)
    # The training and validation images: what the version saw (models.gate.write_seen).
    seen_examples: list[Example] = field(default_factory=list)


def train(
    cfg: TrainConfig,
    examples: list[Example],
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    split: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    other_modality: dict[str, np.ndarray] | None = None,
) -> TrainResult:
    """Patient-level train/val/test split (or the given one, e.g. a CV fold); early
    stopping, calibration and the threshold on validation; the test split is scored
    once, at the end. The out-of-distribution check is calibrated on the training and
    validation images; `other_modality` (named sets of model inputs) adds to the sets
    its flag rate is measured on."""
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
    if cfg.recipe == "probe":
        from models.probe import fit_probe

        fit = fit_probe
    elif cfg.recipe == "finetune":
        fit = _fit
    else:
        raise ValueError(f"unknown recipe {cfg.recipe!r}: finetune or probe")
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
        r = metrics.screening_report(
            y[idx],
            p,
            threshold,
            groups=[groups[i] for i in idx],
            sources=[examples[i].source for i in idx],
        )
        r["ece"] = round(calibration.expected_calibration_error(y[idx], p), 4)
        # The hard part on chest X-rays: COVID against other abnormal findings (mostly
        # other pneumonias), leaving out negatives recorded as normal.
        abnormal = [k for k, i in enumerate(idx) if y[i] == 1 or _abnormal(examples[i])]
        if any(y[idx[k]] == 0 for k in abnormal) and len(abnormal) < len(idx):
            sub = idx[abnormal]
            r["covid_vs_other_findings"] = metrics.screening_report(
                y[sub], p[abnormal], threshold, groups=[groups[i] for i in sub]
            )
        return r

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
            "operating_point": _operating_point(y[te], p_test, threshold),
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


def _abnormal(ex: Example) -> bool:
    return bool(ex.finding) and ex.finding.strip().lower() not in NORMAL_FINDINGS


def _operating_point(y: np.ndarray, p: np.ndarray, threshold: float) -> list[float]:
    c = metrics.confusion(y, p, threshold)
    fpr = c["fp"] / max(c["fp"] + c["tn"], 1)
    tpr = c["tp"] / max(c["tp"] + c["fn"], 1)
    return [round(fpr, 4), round(tpr, 4)]


@dataclass
class ReloadedVersion:
    """A saved version with the images and patient split it was trained on."""

    card: dict
    model: object
    examples: list[Example]
    x: np.ndarray
    split: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def input_size(self) -> int:
        return int(self.card["input_size"])


def reload_version(folder: Path, data: Path | str) -> ReloadedVersion:
    """Load a saved version and re-derive its patient split from the seed in its card,
    for work on the same patients after training (out-of-distribution calibration,
    benchmarks). ValueError when the data no longer gives the split it was trained on."""
    import keras

    import models.layers  # noqa: F401 - registers the layers saved models may hold

    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text())
    examples, x, _ = decode_examples(load_examples(data, card["modality"]), int(card["input_size"]))
    split = train_val_test(examples, seed=card["split"]["seed"])
    if [len(part) for part in split] != [card["split"][p] for p in ("train", "val", "test")]:
        raise ValueError("the data no longer gives the split this version was trained on")
    model = keras.models.load_model(folder / "model.keras", compile=False)
    return ReloadedVersion(card, model, examples, x, split)


def save_version(result: TrainResult, out: Path, command: str | None = None) -> Path:
    """Write model.keras, card.json, a human-readable MODEL_CARD.md and the record of
    what it saw (seen.json, for models.gate) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    # Saved without the augmentation layers' training behaviour mattering: they are
    # identity at inference.
    result.model.save(out / "model.keras")
    if result.ood is not None:
        result.ood.save(out)
    card = dict(result.card)
    if command:
        card["command"] = command
    (out / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (out / "MODEL_CARD.md").write_text(render_card(card))
    from models.report import write_report_images

    write_report_images(card, out)
    if result.seen_examples:
        from models.gate import write_seen

        write_seen(out, result.seen_examples)
    return out


def render_card(card: dict) -> str:
    def line(name: str, r: dict) -> str:
        ci = r.get("auc_ci95") or [None, None]
        return (
            f"| {name} | {r['n']} ({r['n_covid']}/{r['n_non_covid']}) | {r['auc']} "
            f"[{ci[0]}, {ci[1]}] | {r['sensitivity']} | {r['specificity']} | {r.get('ece', '')} |"
        )

    rows = [line("validation", card["validation"]), line("test", card["test"])]
    for src, r in card["test"].get("by_source", {}).items():
        rows.append(line(f"test: {src}", r))
    if "covid_vs_other_findings" in card["test"]:
        rows.append(line("test: COVID vs other abnormal findings", card["test"][
            "covid_vs_other_findings"]))  # fmt: skip
    cv_lines = []
    if card.get("cross_validation"):
        cv = card["cross_validation"]
        folds = cv["folds"]
        n_folds = cv.get("folds_per_repeat", len(folds))
        repeats = cv.get("auc_per_repeat", [])
        auc, sens, spec = (cv["summary_mean_sd"][k] for k in ("auc", "sensitivity", "specificity"))
        spread = (
            f"(mean ± sd over {len(folds)} test parts: {len(repeats)} partitions into {n_folds} "
            "folds; mean of each partition " + ", ".join(f"{a:.3f}" for a in repeats) + ")"
            if len(repeats) > 1
            else "(mean ± sd over folds; per fold "
            + ", ".join(f"{f['auc']:.3f}" for f in folds)
            + ")"
        )
        cv_lines = [
            f"Settings chosen by patient-grouped {n_folds}-fold cross-validation on the "
            f"development data (`python -m bench.cv`, setting `{cv['setting']}`); on each "
            "fold's held-out patients:",
            "",
            f"- AUC {auc[0]:.3f} ± {auc[1]:.3f} {spread}",
            f"- sensitivity {sens[0]:.3f} ± {sens[1]:.3f}, specificity {spec[0]:.3f} ± "
            f"{spec[1]:.3f} at each fold's validation-chosen threshold",
            "",
        ]
    return "\n".join(
        [
            f"# ScanQ model card: {card['modality']} / {card['backbone']}"
            f" @ {card['input_size']} px"
            + _also_at(card["config"].get("probe_scales"))
            + _imagenet_view(card["config"].get("probe_imagenet_view")),
            "",
            "Research software, not a diagnostic device. Do not use these scores for the",
            "care of a patient.",
            "",
            f"- Trained with: `{card.get('command', '(library call)')}`",
            f"- Data fingerprint: `{card['data_fingerprint']}`; split: {card['split']}",
            f"- Threshold {card['threshold']:.4f} (chosen on validation for sensitivity >= "
            f"{card['config']['target_sensitivity']}); temperature {card['temperature']:.3f}",
            f"- Backbone start: {'ImageNet weights' if card.get('pretrained') else 'random'}; "
            + (
                f"recipe: linear probe on frozen pooled features, C = "
                f"{card['history']['chosen_c'][0]} (chosen on validation), fitted on the "
                f"{card['split'].get('model_fit_on', 'training')} patients; "
                if card["config"].get("recipe") == "probe"
                else f"recipe: fine-tuning, epochs run: {card['epochs_run']}; "
            )
            + f"training time {card['train_seconds']} s",
            "",
            *cv_lines,
            "This model's own split (train / validation for model selection, calibration "
            "and threshold / test scored once):",
            *(
                [
                    "",
                    "The validation row scores the probe fitted on the training patients "
                    "alone, which chose C, the temperature and the threshold; this version is "
                    "that probe fitted again on training and validation patients.",
                ]
                if card["split"].get("model_fit_on") == "training+validation"
                else []
            ),
            "",
            "| split | n (covid/non) | AUC [95% CI, patient bootstrap] | sensitivity | "
            "specificity | ECE |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "Test figures come from held-out patients scored once. They are small samples:",
            "read the intervals, not the point estimates. Many COVID-positive images are",
            "figures cropped from papers, so source-specific shortcuts are possible.",
            "",
        ]
    ) + (render_ood_section(card["ood"]) if card.get("ood") else "")


def _also_at(scales) -> str:
    return f" (and {', '.join(str(s) for s in scales)} px)" if scales else ""


def _imagenet_view(size) -> str:
    return f", ImageNet-scaled view at {size} px" if size else ""


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
