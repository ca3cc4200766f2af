"""Calibrate a model version's out-of-distribution check and measure it.

Training calls `calibrate_version` for every new version; run this module to add the
calibration to a version trained before it existed (the shipped models were):

    python -m models.ood_calibration --version models/default/xray --data ../shared/data

It re-derives the version's patient split from the seed in its card (and refuses if the
split sizes differ), calibrates on the training + validation patients, and writes
ood.npz plus an "ood" section with measured flag rates into card.json and MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import ood, ood_sets
from models.dataset import load_examples, split_groups
from models.decode import decode_examples
from models.lung.field import as_trained
from models.preprocess import resize_square
from models.version import reload_version, write_card

log = logging.getLogger(__name__)


def _features(net, x: np.ndarray) -> np.ndarray:
    return np.asarray(net.predict(x, batch_size=32, verbose=0)[1], dtype=np.float32)


def foreign_sets(
    x_test: np.ndarray, size: int, other: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Model inputs of every set a card reports besides the held-out scans: what is not
    a scan of this modality (another modality, photographs, text, noise, blanks) and the
    held-out scans rotated or inverted."""
    grey = [a[..., 0].astype(np.uint8) for a in x_test]
    sets = dict(other or {})
    for name, make in ood_sets.SYNTHETIC.items():
        sets[name] = np.stack([resize_square(g, size) for g in make()])
    if grey:
        sets["rotated_scans"] = np.stack([resize_square(g, size) for g in ood_sets.rotated(grey)])
        sets["inverted_scans"] = np.stack([resize_square(g, size) for g in ood_sets.inverted(grey)])
    return sets


@dataclass
class Featured:
    """Features computed once, for calibrating (perhaps with several k) and measuring."""

    features: np.ndarray  # of every image of the version's data
    sets: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (model inputs, features)


def featurize(
    model, x: np.ndarray, test_idx: np.ndarray, other: dict[str, np.ndarray] | None = None
) -> Featured:
    net = ood.with_features(model)
    feats = _features(net, x)
    sets = {"in_distribution_test": (x[test_idx], feats[test_idx])}
    for name, inputs in foreign_sets(x[test_idx], int(x.shape[1]), other).items():
        sets[name] = (inputs, _features(net, inputs))
    return Featured(feats, sets)


def fit_and_measure(
    featured: Featured, groups: list[str], fit_idx: np.ndarray, k: int = ood.DEFAULT_K
) -> tuple[ood.OODModel, dict]:
    """(calibration, card section) from features already computed."""
    feats = featured.features
    fitted, held_out = ood.calibrate(feats[fit_idx], [groups[i] for i in fit_idx], k=k)
    section = {
        "method": f"cosine k-nearest-neighbour (k={fitted.k}) on pooled backbone features",
        "k": fitted.k,
        "target_rate": fitted.target_rate,
        "threshold": round(fitted.threshold, 6),
        "n_calibration": int(len(fit_idx)),
        "calibration_flag_rate": round(float(np.mean(held_out > 1.0)), 4),
        "flag_rates": ood.flag_rates(fitted, featured.sets),
    }
    return fitted, section


def calibrate_version(
    model,
    x: np.ndarray,
    groups: list[str],
    fit_idx: np.ndarray,
    test_idx: np.ndarray,
    other: dict[str, np.ndarray] | None = None,
    k: int = ood.DEFAULT_K,
) -> tuple[ood.OODModel, dict]:
    """(calibration, card section). `fit_idx` are the training + validation images,
    `test_idx` the held-out patients, `other` named sets of another modality's inputs."""
    return fit_and_measure(featurize(model, x, test_idx, other), groups, fit_idx, k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--version", required=True, help="a model version folder")
    ap.add_argument("--data", required=True, help="the dev data root the version was trained on")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folder = Path(args.version)
    try:
        v = reload_version(folder, args.data)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    tr, va, te = v.split
    other = other_modality_inputs(Path(args.data), v.card["modality"], v.input_size)
    # A lung-crop version is calibrated on what it is fed (models.lung.field).
    x = as_trained(folder, v.x)
    other = {name: as_trained(folder, o) for name, o in other.items()}
    fitted, section = calibrate_version(
        v.model, x, split_groups(v.examples), np.concatenate([tr, va]), te, other
    )
    fitted.save(folder)
    card = {**v.card, "ood": section}
    write_card(folder, card)
    log.info("%s", json.dumps(section["flag_rates"]))
    return 0


def other_modality_inputs(data: Path, modality: str, size: int) -> dict[str, np.ndarray]:
    """The other modality's dev images as a named set, when the data root has them."""
    other = "ct" if modality == "xray" else "xray"
    if not (data / other / "labels.csv").exists():
        return {}
    _, x, _ = decode_examples(load_examples(data, other), size)
    return {f"{other}_as_{modality}": x}


if __name__ == "__main__":
    raise SystemExit(main())
