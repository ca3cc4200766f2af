"""Drift: are this site's scans still like the images a model version was measured on?

Each version keeps a reference (`drift_reference.json` in its folder): the
probabilities and out-of-distribution scores of held-out images of its own data,
computed exactly as a scored site image's are. Site windows (a day, a week) are compared
with it by the population stability index (PSI) over ten equal-mass bins of the
reference.

Why PSI and not a two-sample test: an alert should say how far the scans have moved,
not how sure we are that they moved at all. A test's p-value shrinks with the window
(a busy week flags a trivial shift, a quiet day never flags a large one); PSI is a size
of shift with thresholds operators already read (0.1 some, 0.25 large). Its one weakness
is small samples: with B bins, a window of n images against a reference of m has an
expected PSI of about (B - 1)(1/n + 1/m) with no drift at all, so that chance level is
reported beside it and subtracted before comparing with the alert setting.

The reference images are the version's test split, the patients that neither the model
nor its out-of-distribution bank were fitted on (validation patients are in the bank
and, for a refitted probe, in the model too). Computing one needs TensorFlow, so it is
done offline (`python -m models.drift`) or in a worker task (worker.drift), never in the
web process; everything else here is plain NumPy.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REFERENCE_FILE = "drift_reference.json"
BINS = 10
_SMOOTH = 0.5  # additive smoothing of bin counts: an empty bin must not make PSI infinite

log = logging.getLogger(__name__)


def psi(reference: Sequence[float], sample: Sequence[float], bins: int = BINS) -> dict | None:
    """Population stability index of `sample` against `reference`, over equal-mass bins
    of the reference (values beyond its range fall into the outer bins), with the level
    expected by chance alone and the excess over it. None when either side is empty."""
    ref = np.asarray([v for v in reference if v is not None], dtype=np.float64)
    new = np.asarray([v for v in sample if v is not None], dtype=np.float64)
    if len(ref) == 0 or len(new) == 0:
        return None
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    n_bins = len(inner) + 1

    def shares(values: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=n_bins)
        return (counts + _SMOOTH) / (len(values) + _SMOOTH * n_bins)

    e, a = shares(ref), shares(new)
    value = float(np.sum((a - e) * np.log(a / e)))
    chance = (n_bins - 1) * (1.0 / len(new) + 1.0 / len(ref))
    return {
        "psi": round(value, 4),
        "chance": round(chance, 4),
        "excess": round(value - chance, 4),
        "bins": n_bins,
        "n": int(len(new)),
        "n_reference": int(len(ref)),
    }


def quantiles(values: Sequence[float], qs: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9)):
    """The distribution of a window, for plots: the given quantiles, or None if empty."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return None
    return [round(float(x), 4) for x in np.quantile(v, qs)]


def load_reference(folder: Path) -> dict | None:
    path = Path(folder) / REFERENCE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def save_reference(folder: Path, reference: dict) -> Path:
    path = Path(folder) / REFERENCE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(reference) + "\n")
    tmp.replace(path)
    return path


def retemper(reference: dict, temperature: float) -> dict:
    """The same reference under another temperature (a recalibrated version keeps its
    parent's weights, so only its probabilities move: sigma(z / T_new))."""
    from models.calibration import apply_temperature

    ratio = float(temperature) / float(reference["temperature"])
    scores = apply_temperature(np.asarray(reference["scores"]), ratio)
    return {**reference, "scores": [round(float(s), 6) for s in scores],
            "temperature": float(temperature)}  # fmt: skip


def compute_reference(folder: Path, data: Sequence[Path | str], temperature: float) -> dict:
    """Score the version's test split (re-derived from the seed in its card, as
    models.version.reload_version does) as a worker scores a site image. Needs
    TensorFlow. ValueError when the data no longer gives the version's split."""
    from models.dataset import load_examples, train_val_test
    from models.decode import decode_examples
    from models.predictor import Predictor

    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text())
    examples = []
    for root in data:
        examples += load_examples(root, card["modality"])
    examples, x, _ = decode_examples(examples, int(card["input_size"]))
    split = train_val_test(examples, seed=card["split"]["seed"])
    if [len(part) for part in split] != [card["split"][p] for p in ("train", "val", "test")]:
        raise ValueError("the data no longer gives the split this version was trained on")
    test = split[2]
    predictor = Predictor(folder, batch_size=32, temperature=temperature)
    probs, verdicts = predictor.predict_and_judge(x[test])
    return {
        "images": "test split (patients neither the model nor its OOD bank was fitted on)",
        "n": int(len(test)),
        "temperature": float(temperature),
        "scores": [round(float(p), 6) for p in probs],
        "ood_scores": [v.score for v in verdicts],
        "flagged_share": round(float(np.mean([bool(v.flagged) for v in verdicts])), 4),
    }


def window_key(when, period: str) -> str:
    """The window a time falls in: "2026-12-01" (day) or "2026-W49" (ISO week)."""
    if period == "day":
        return when.strftime("%Y-%m-%d")
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def window_stats(
    rows: Sequence[tuple[float | None, float | None, bool | None]], reference: dict | None
) -> dict:
    """One window's figures from its results' (probability, ood_score, flagged)."""
    n = len(rows)
    judged = [r for r in rows if r[2] is not None]
    flagged = sum(1 for r in judged if r[2])
    probs = [r[0] for r in rows if r[0] is not None]
    oods = [r[1] for r in rows if r[1] is not None]
    out = {
        "images": n,
        "flagged": flagged,
        "flagged_share": round(flagged / len(judged), 4) if judged else None,
        "score_quantiles": quantiles(probs),
        "ood_quantiles": quantiles(oods),
        "score_psi": None,
        "ood_psi": None,
    }
    if reference:
        out["score_psi"] = psi(reference["scores"], probs)
        out["ood_psi"] = psi(reference["ood_scores"], oods)
    return out


def drift_reasons(stats: dict, psi_alert: float, share_alert: float, min_images: int) -> list[str]:
    """Why a window counts as drifted (empty: it does not). Windows of fewer than
    `min_images` images never alert: too few to tell."""
    if stats["images"] < min_images:
        return []
    reasons = []
    share = stats["flagged_share"]
    if share is not None and share > share_alert:
        reasons.append(f"{share:.0%} flagged out of distribution (alert above {share_alert:.0%})")
    for key, what in (("score_psi", "scores"), ("ood_psi", "out-of-distribution scores")):
        p = stats.get(key)
        if p and p["excess"] > psi_alert:
            reasons.append(
                f"{what} moved: PSI {p['psi']:.2f} ({p['chance']:.2f} expected by chance; "
                f"alert above {psi_alert:.2f} beyond chance)"
            )
    return reasons


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a version's drift reference.")
    ap.add_argument("--version", required=True, help="a model version folder")
    ap.add_argument("--data", required=True, nargs="+", help="the data it was trained on")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folder = Path(args.version)
    card = json.loads((folder / "card.json").read_text())
    try:
        ref = compute_reference(folder, args.data, float(card.get("temperature", 1.0)))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    save_reference(folder, ref)
    log.info("%s: %d reference images, %.1f%% flagged", folder, ref["n"],
             100 * ref["flagged_share"])  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
