"""Which study score, and how a scanner CT slice should be prepared: measured.

1. Slice preparation (CT). Each dev crop is put back into a simulated scanner slice in
   Hounsfield units (grey g -> g / 255 * 1500 - 1350 HU, as tests/dicom_factory writes
   DICOM from the dev slices; the figure's black surround -> air; the crop placed in a
   512 px field of air inside a circular field of view, a table under it, scanner
   noise) and read three ways: the crop itself (what the model learnt from), the
   scanner slice whole through the lung window (the DICOM path before models.ct_slice)
   the scanner slice prepared by models.ct_slice (cropped to the lungs), and cropped to
   the body's box instead (models.ct_slice.prepare(to="body")). For each: slice-level AUC of
   out-of-fold probes, the share flagged out of distribution by out-of-fold
   calibrations (both fitted on the crops of the other patients only), and how well the
   prepared crop finds the original (intersection over union of the boxes).
2. Study aggregate. Per-image out-of-fold probabilities of the crops (probe and OOD
   fitted as models.probe / models.ood do, on patient-grouped folds, bench.cv's
   splits), aggregated per patient by every candidate of models.study_aggregate:
   patient-level AUC (all patients, and those with two images or more), CT and X-ray.
3. Full volumes (CT). Volumes of N = 16, 100, 500 slices resampled from the
   out-of-fold slice probabilities: negative volumes from negative slices; positive
   volumes with a share `--disease` of positive slices, the rest negative; and negative
   volumes where a tenth of the slices are scanner slices read whole (what the old path
   scored, outside the lungs included). Per aggregate: the mean and 95th percentile
   of negative volumes' scores, and the AUC of positive against negative volumes.

Features are the shipped version's own (its frozen backbone, through the CPU runtime),
cached under bench/out; the probe on top is refitted per fold, so nothing is scored by
a probe that saw its patient.

    python -m bench.study_aggregate --folds 5 --repeats 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bench import DEFAULT_DATA, OUT
from bench.cv import fold_splits
from models import ct_slice, metrics, ood, study_aggregate
from models.dataset import load_examples
from models.preprocess import resize_square
from models.probe import C_GRID, fit_regression

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (-1350.0, 150.0)  # the lung window (centre -600, width 1500) as lo, hi
FIELD = 512


def window(hu: np.ndarray) -> np.ndarray:
    lo, hi = WINDOW
    return (np.clip((hu - lo) / (hi - lo), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def scanner_slice(grey: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """A dev crop (uint8) as a scanner slice in HU, and where the crop lies in it."""
    hu = grey.astype(np.float64) / 255.0 * 1500.0 - 1350.0
    hu[grey < 8] = -1000.0  # the figure's black surround is air on a scanner
    width = int(rng.integers(300, 360))
    height = max(8, round(width * grey.shape[0] / grey.shape[1]))
    height = min(height, 380)
    crop = np.asarray(
        Image.fromarray(hu.astype(np.float32), mode="F").resize((width, height)),
        dtype=np.float64,
    )
    field = np.full((FIELD, FIELD), -1000.0)
    top = int(rng.integers(40, max(41, FIELD - height - 70)))
    left = (FIELD - width) // 2 + int(rng.integers(-20, 21))
    field[top : top + height, left : left + width] = crop
    table = min(FIELD - 12, top + height + int(rng.integers(8, 20)))
    field[table : table + 8, 60 : FIELD - 60] = 150.0  # the table, under the patient
    field += rng.normal(0.0, 12.0, field.shape)
    yy, xx = np.mgrid[:FIELD, :FIELD]
    field[(yy - FIELD / 2) ** 2 + (xx - FIELD / 2) ** 2 > (FIELD / 2) ** 2] = -2048.0
    return field, (top, top + height, left, left + width)


def _iou(a: tuple, b: tuple) -> float:
    h = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    w = max(0, min(a[3], b[3]) - max(a[2], b[2]))
    inter = h * w
    area = (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter
    return inter / area if area else 0.0


# The scanner-slice preparations compared: (crop to, margin, outside the body blanked)
PREPARATIONS = {
    "scanner_lungs": ("lungs", 0.08, True),
    "scanner_body": ("body", 0.03, True),
    "scanner_body_air_kept": ("body", 0.03, False),
}


def ct_views(examples, size: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """The views of every dev CT slice at the model's input size, whether the shipped
    preparation screens it, and what that preparation found."""
    rng = np.random.default_rng(seed)
    views: dict[str, list] = {"crop": [], "scanner_whole": [], **{k: [] for k in PREPARATIONS}}
    ious, screened, kept_whole = [], [], 0
    for ex in examples:
        with Image.open(ex.path) as im:
            grey = np.asarray(im.convert("L"))
        views["crop"].append(resize_square(grey, size))
        field, where = scanner_slice(grey, rng)
        views["scanner_whole"].append(resize_square(window(field), size))
        for name, (to, margin, blank) in PREPARATIONS.items():
            prepared = ct_slice.prepare(field, to=to, margin=margin, blank_outside=blank)
            views[name].append(resize_square(window(prepared.hu), size))
        shipped = ct_slice.prepare(field)
        screened.append(shipped.reason is None)
        kept_whole += shipped.box == (0, FIELD, 0, FIELD)
        ious.append(_iou(shipped.box, where))
    found = {
        "slices": len(examples),
        "not_screened_no_lung": int(len(screened) - sum(screened)),
        "left_whole": kept_whole,
        "box_iou_median": round(float(np.median(ious)), 3),
        "box_iou_p10": round(float(np.quantile(ious, 0.1)), 3),
    }
    return {k: np.stack(v) for k, v in views.items()}, np.asarray(screened), found


def features(folder: Path, cache: str, views: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The version's backbone features of each view (cached, one file per view)."""
    out, predictor = {}, None
    for name, images in views.items():
        path = OUT / f"study_aggregate_{cache}_{name}.npz"
        if path.exists():
            with np.load(path) as z:
                out[name] = z["features"]
            continue
        if predictor is None:
            from models.runtimes import load_predictor

            predictor = load_predictor(folder, "onnx", 16, 1.0, 1, threads=2)
        out[name] = predictor.predict_with_features(images)[1]
        np.savez_compressed(path, features=out[name])
    return out


def fitted_probe(f: np.ndarray, y: np.ndarray, tr, va):
    """The decision function of a probe fitted as models.probe fits the shipped ones:
    C chosen on the validation patients, then refitted on training + validation."""
    best = None
    for c in C_GRID:
        scaler, clf = fit_regression(f[tr], y[tr], c)
        auc = metrics.roc_auc(y[va], clf.decision_function(scaler.transform(f[va])))
        if best is None or auc > best[0]:
            best = (auc, c)
    scaler, clf = fit_regression(f[np.concatenate([tr, va])], y[np.concatenate([tr, va])], best[1])
    return lambda part: clf.decision_function(scaler.transform(part))


def out_of_fold(examples, feats: dict[str, np.ndarray], folds: int, repeat: int):
    """Per repeat: out-of-fold probabilities and OOD flags of every view (probe and
    calibration fitted on the crops of the other folds' patients)."""
    y = np.asarray([ex.label for ex in examples])
    groups = [ex.patient_id for ex in examples]
    base = feats["crop"]
    probs = {k: np.zeros(len(y)) for k in feats}
    flags = {k: np.zeros(len(y), dtype=bool) for k in feats}
    for tr, va, te in fold_splits(examples, folds, repeat):
        fit = np.concatenate([tr, va])
        calib, _ = ood.calibrate(base[fit], [groups[i] for i in fit])
        score = fitted_probe(base, y, tr, va)
        for k, f in feats.items():
            probs[k][te] = 1.0 / (1.0 + np.exp(-score(f[te])))
            flags[k][te] = calib.scores(f[te]) > 1.0
    return y, probs, flags


def patient_aucs(examples, y, p, flags) -> dict[str, dict]:
    by: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by.setdefault(ex.patient_id, []).append(i)
    out = {}
    for name in study_aggregate.AGGREGATES:
        scores, labels, many = [], [], []
        for idx in by.values():
            s = study_aggregate.study_score([p[i] for i in idx], [False] * len(idx), name=name)
            scores.append(s.score)
            labels.append(int(y[idx].max()))
            many.append(len(idx) > 1)
        scores, labels, many = map(np.asarray, (scores, labels, many))
        out[name] = {
            "auc": round(metrics.roc_auc(labels, scores), 4),
            "auc_2plus": round(metrics.roc_auc(labels[many], scores[many]), 4),
        }
    abstain = []
    for idx in by.values():
        s = study_aggregate.study_score([p[i] for i in idx], [bool(flags[i]) for i in idx])
        abstain.append(s.abstained)
    out["_patients"] = {"n": len(by), "with_2plus": int(sum(len(v) > 1 for v in by.values())),
                        "abstained_share": round(float(np.mean(abstain)), 4)}  # fmt: skip
    return out


def volumes(pools: dict[str, np.ndarray], ns, disease: float, reps: int, seed: int) -> dict:
    """How each aggregate behaves as a volume grows (see the module docstring)."""
    rng = np.random.default_rng(seed)
    neg, pos, odd = pools["negative"], pools["positive"], pools["negative_whole"]
    out: dict = {}
    for n in ns:
        k_pos = max(1, round(disease * n))
        k_odd = max(1, round(0.1 * n))
        negs = rng.choice(neg, (reps, n))
        poss = np.concatenate(
            [rng.choice(pos, (reps, k_pos)), rng.choice(neg, (reps, n - k_pos))], 1
        )
        odds = np.concatenate(
            [rng.choice(odd, (reps, k_odd)), rng.choice(neg, (reps, n - k_odd))], 1
        )
        # The same, each volume drawn from ONE dev patient's slices (with replacement;
        # patients with 3 slices or more), so slices of a volume are alike as a
        # patient's are: independent draws would let any average shrink its noise.
        neg_p, pos_p = pools["negative_patients"], pools["positive_patients"]
        pick_n = rng.integers(0, len(neg_p), (2, reps))
        pick_p = rng.integers(0, len(pos_p), reps)
        negs_pt = [rng.choice(neg_p[i], n) for i in pick_n[0]]
        poss_pt = [np.r_[rng.choice(pos_p[j], k_pos), rng.choice(neg_p[i], n - k_pos)]
                   for i, j in zip(pick_n[1], pick_p, strict=True)]  # fmt: skip
        labels = np.r_[np.zeros(reps), np.ones(reps)]
        row = {}
        for name in study_aggregate.AGGREGATES:
            f = study_aggregate.AGGREGATES[name][0]
            sn = np.array([f(v) for v in negs])
            sp = np.array([f(v) for v in poss])
            so = np.array([f(v) for v in odds])
            row[name] = {
                "neg_mean": round(float(sn.mean()), 3),
                "neg_p95": round(float(np.quantile(sn, 0.95)), 3),
                "auc": round(metrics.roc_auc(labels, np.r_[sn, sp]), 4),
                "neg_with_whole_slices_mean": round(float(so.mean()), 3),
                "auc_with_whole_slices": round(metrics.roc_auc(labels, np.r_[so, sp]), 4),
                "neg_mean_by_patient": round(float(np.mean([f(v) for v in negs_pt])), 3),
                "auc_by_patient": round(metrics.roc_auc(
                    labels, np.r_[[f(v) for v in negs_pt], [f(v) for v in poss_pt]]), 4),
            }  # fmt: skip
        out[str(n)] = row
    return out


def main() -> None:
    from models.decode import decode_examples

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--disease", type=float, nargs="+", default=[0.25, 0.1],
                    help="shares of positive slices in a simulated positive volume")  # fmt: skip
    ap.add_argument("--volumes", type=int, default=2000)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    report: dict = {"args": vars(args)}

    ct = load_examples(args.data, "ct")
    views, screened, report["ct_preparation"] = ct_views(ct, 352, seed=0)
    print("CT preparation:", report["ct_preparation"], flush=True)
    feats = features(ROOT / "models/default/ct", "ct", views)
    for r in range(args.repeats):
        y, probs, flags = out_of_fold(ct, feats, args.folds, r)
        report.setdefault("ct_views", []).append({
            k: {"slice_auc": round(metrics.roc_auc(y, probs[k]), 4),
                "ood_share": round(float(flags[k].mean()), 4),
                "slice_auc_screened": round(metrics.roc_auc(y[screened], probs[k][screened]), 4),
                "ood_share_screened": round(float(flags[k][screened].mean()), 4)}
            for k in probs
        })  # fmt: skip
        report.setdefault("ct_patients", []).append(
            patient_aucs(ct, y, probs["crop"], flags["crop"])
        )
        if r == 0:
            by: dict[str, list[int]] = {}
            for i, ex in enumerate(ct):
                by.setdefault(ex.patient_id, []).append(i)
            multi = [np.asarray(v) for v in by.values() if len(v) >= 3]
            p = probs["crop"]
            pools = {"negative": p[y == 0], "positive": p[y == 1],
                     "negative_whole": probs["scanner_whole"][y == 0],
                     "negative_patients": [p[v] for v in multi if y[v[0]] == 0],
                     "positive_patients": [p[v] for v in multi if y[v[0]] == 1]}  # fmt: skip
            report["ct_volume_patients"] = {
                k: len(pools[k]) for k in ("negative_patients", "positive_patients")
            }
    print("CT views:", json.dumps(report["ct_views"]), flush=True)
    print("CT patients:", json.dumps(report["ct_patients"]), flush=True)
    report["ct_volumes"] = {}
    for disease in args.disease:
        runs = volumes(pools, (16, 100, 500), disease, args.volumes, seed=0)
        report["ct_volumes"][str(disease)] = runs
        for n, row in runs.items():
            for name, v in row.items():
                print(f"disease {disease:.2f} N={n:>3} {name:14s} {v}", flush=True)

    xr_examples = load_examples(args.data, "xray")
    xr, x, skipped = decode_examples(xr_examples, 256)
    if skipped:
        raise SystemExit(f"unreadable X-rays: {skipped}")
    xfeats = features(ROOT / "models/default/xray", "xray", {"crop": x})
    for r in range(args.repeats):
        y, probs, flags = out_of_fold(xr, xfeats, args.folds, r)
        report.setdefault("xray_patients", []).append(
            patient_aucs(xr, y, probs["crop"], flags["crop"])
        )
    print("X-ray patients:", json.dumps(report["xray_patients"]), flush=True)
    (OUT / "study_aggregate.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
