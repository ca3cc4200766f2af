"""Out-of-distribution scores: is this image like the scans the model was trained on?

A classifier returns a probability for anything, a cat included. ScanQ therefore keeps,
with every model version, the pooled backbone features that version computes anyway
(`with_features`) for its training and validation images, and scores a new image by
the distance from its L2-normalised features to the k-th nearest of those (the
"deep nearest neighbours" method of Sun et al., 2022). It needs no extra model and no
assumption that the features are Gaussian, which a few hundred scans could not support.

Calibration is leave-patient-out: each bank image is scored against the images of other
patients only (an image is always near its own copies and neighbouring slices), and the
threshold is the quantile that flags `target_rate` of them. Scores are reported divided
by that threshold, so `ood_score > 1` means flagged under every model version.

A near-constant frame is flagged before any distance: its features are whatever the
network makes of nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILENAME = "ood.npz"
DEFAULT_K = 5
DEFAULT_TARGET_RATE = 0.01
# Standard deviation (0..255 grey levels) under which a frame is "near-constant".
BLANK_STD = 2.0
BLANK_REASON = "near-constant image (blank frame)"
FAR_REASON = "unlike the scans this model was trained on"


def _normalise(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.maximum(norms, 1e-12)


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of unit rows (2 - 2 cos)."""
    return np.maximum(2.0 - 2.0 * (a @ b.T), 0.0)


@dataclass
class OODModel:
    bank: np.ndarray  # (n, d) unit-norm features of the calibration images
    k: int
    threshold: float  # k-th neighbour distance flagging `target_rate` of the bank
    target_rate: float

    def distances(self, features: np.ndarray) -> np.ndarray:
        """k-th nearest neighbour distance of each row to the bank."""
        if len(features) == 0:
            return np.zeros(0)
        d2 = _sq_distances(_normalise(features), self.bank)
        k = min(self.k, self.bank.shape[0]) - 1
        return np.sqrt(np.partition(d2, k, axis=1)[:, k])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Distances in units of the threshold: above 1 is out of distribution."""
        return self.distances(features) / self.threshold

    def save(self, folder: Path) -> Path:
        path = Path(folder) / FILENAME
        np.savez_compressed(
            path,
            bank=self.bank.astype(np.float16),
            k=self.k,
            threshold=self.threshold,
            target_rate=self.target_rate,
        )
        return path

    @classmethod
    def load(cls, folder: Path) -> OODModel | None:
        """The version's calibration, or None for a version trained without one."""
        path = Path(folder) / FILENAME
        if not path.exists():
            return None
        with np.load(path) as z:
            return cls(
                bank=z["bank"].astype(np.float32),
                k=int(z["k"]),
                threshold=float(z["threshold"]),
                target_rate=float(z["target_rate"]),
            )


def leave_group_out_distances(features: np.ndarray, groups: list[str], k: int) -> np.ndarray:
    """Each row's k-th neighbour distance among rows of other groups (patients)."""
    f = _normalise(features)
    d2 = _sq_distances(f, f)
    g = np.asarray(groups)
    d2[g[:, None] == g[None, :]] = np.inf
    k = min(k, len(f) - 1) - 1
    return np.sqrt(np.partition(d2, k, axis=1)[:, k])


def calibrate(
    features: np.ndarray,
    groups: list[str],
    k: int = DEFAULT_K,
    target_rate: float = DEFAULT_TARGET_RATE,
) -> tuple[OODModel, np.ndarray]:
    """Fit on in-distribution features (training + validation images); returns the
    model and each calibration image's leave-patient-out score (about `target_rate` of
    them are above 1). With few patients, k shrinks so that every image has k
    neighbours among other patients."""
    n_groups = len(set(groups))
    if n_groups < 2:
        raise ValueError("out-of-distribution calibration needs images of two patients or more")
    k = min(k, n_groups - 1)
    held_out = leave_group_out_distances(features, groups, k)
    threshold = max(float(np.quantile(held_out, 1.0 - target_rate)), 1e-6)
    model = OODModel(bank=_normalise(features), k=k, threshold=threshold, target_rate=target_rate)
    return model, held_out / threshold


def blank_frames(images: np.ndarray) -> np.ndarray:
    """True for near-constant frames, from the (N, S, S, 1) model input in 0..255."""
    if len(images) == 0:
        return np.zeros(0, dtype=bool)
    return images.reshape(len(images), -1).std(axis=1) < BLANK_STD


@dataclass(frozen=True)
class Verdict:
    score: float | None  # None: the version has no calibration
    flagged: bool | None
    reason: str | None


def judge(model: OODModel | None, images: np.ndarray, features: np.ndarray) -> list[Verdict]:
    """One verdict per image: blank frames first, then the feature distance."""
    blank = blank_frames(images)
    if model is None:
        return [
            Verdict(None, True, BLANK_REASON) if b else Verdict(None, None, None) for b in blank
        ]
    scores = model.scores(features)
    out = []
    for s, b in zip(scores, blank, strict=True):
        s = round(float(s), 4)
        if b:
            out.append(Verdict(s, True, BLANK_REASON))
        elif s > 1.0:
            out.append(Verdict(s, True, FAR_REASON))
        else:
            out.append(Verdict(s, False, None))
    return out


def with_features(model, maps: bool = False):
    """The same Keras model with a second output: its pooled backbone features as they
    are, before the probe's standardisation (the input of the "standardize" layer, or of
    the "covid" layer in fine-tuned models). Measured on the dev data (bench/ood.py),
    cosine neighbours on these raw activations flag every other-modality image, photo,
    text page and noise frame; on the standardised ones, where each of the 1,984
    dimensions weighs the same, CT's model flagged only a third of the text pages.

    With `maps`, a third output when the model's head allows it: the heat maps of
    models.gradcam.maps_output, computed forward from the same call."""
    import keras

    names = {layer.name for layer in model.layers}
    tap = model.get_layer("standardize" if "standardize" in names else "covid").input
    outputs = [model.outputs[0], tap]
    if maps:
        from models.gradcam import maps_output

        heat = maps_output(model)
        outputs += [] if heat is None else [heat]
    return keras.Model(model.inputs, outputs)


def flag_rates(model: OODModel, sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """Measured flags per named set of (model inputs, features)."""
    out = {}
    for name, (images, features) in sets.items():
        verdicts = judge(model, images, features)
        flagged = sum(bool(v.flagged) for v in verdicts)
        out[name] = {
            "n": len(verdicts),
            "flagged": flagged,
            "rate": round(flagged / max(len(verdicts), 1), 4),
        }
    return out
