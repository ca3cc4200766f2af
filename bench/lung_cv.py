"""The lung-field recipe against the shipped X-ray recipe, with the shortcut report.

Both are the probe of `probe_256_inet224` (equalised 256 px view + ImageNet-scaled 224
px view of Lite0, five pooled depths), fitted as `models.probe` fits (C chosen on the
validation patients, refitted on training + validation) on the same 20 patient-grouped
test parts as `bench.cv --folds 5 --repeats 4`. The lung-field recipe sees each image
cut to its segmented lungs' box widened by a margin (models.lung.crop). Each test part
is scored three ways (models.lung.shortcut): as it is, with the lungs hidden (mean grey)
and with only the lungs kept. Features are computed once per image and view, so this
takes minutes, not the hours of 40 full trainings; the plain figure is measured by the
same code, so the comparison is paired.

    python -m bench.lung_cv --margins 0.05,0.1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench import DEFAULT_DATA, OUT
from bench.cv import fold_splits
from models import metrics
from models.dataset import load_examples
from models.lung.crop import crop_to_lungs
from models.lung.segmenter import shipped
from models.lung.shortcut import hide_lungs, lungs_only
from models.preprocess import load_for_model
from models.probe import C_GRID, fit_regression

VIEWS = ("auc", "auc_lungs_hidden", "auc_lungs_only")


def _features(images: np.ndarray) -> np.ndarray:
    from models.backbones import build_probe_features

    model, _pretrained = build_probe_features(
        "efficientnet_lite0", 256, "auto", equalize=True, imagenet_view=224
    )
    return model.predict(images, batch_size=16, verbose=0)


def _views(images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "auc": images,
        "auc_lungs_hidden": hide_lungs(images, masks),
        "auc_lungs_only": lungs_only(images, masks),
    }


def _fitted_probe(f: np.ndarray, y: np.ndarray, tr, va):
    """The probe as `models.probe` fits it (bench.probe_ensemble.probe_logits does the
    same): C chosen on validation, refitted on training + validation. Returns a function
    features -> logits, to score every view of the test part with one fit."""
    best = None
    for c in C_GRID:
        scaler, clf = fit_regression(f[tr], y[tr], c)
        auc = metrics.roc_auc(y[va], clf.decision_function(scaler.transform(f[va])))
        if best is None or auc > best[0]:
            best = (auc, c)
    both = np.concatenate([tr, va])
    scaler, clf = fit_regression(f[both], y[both], best[1])
    return lambda g: clf.decision_function(scaler.transform(g))


def _summary(parts: list[float]) -> dict:
    return {
        "mean_sd": [round(float(np.mean(parts)), 4), round(float(np.std(parts)), 4)],
        "parts": [round(float(p), 4) for p in parts],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--margins", default="0.1", help="lung-box margins, fractions of the side")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    examples = load_examples(args.data, "xray")
    y = np.array([e.label for e in examples])
    source = np.array([e.source for e in examples])
    t0 = time.time()
    x = np.stack([load_for_model(e.path, 256) for e in examples])
    segmenter = shipped()
    if segmenter is None:
        raise SystemExit("no lung segmenter in models/default/lung: python -m models.lung.train")
    masks = segmenter.masks(x)
    recipes = {"probe_256_inet224": _views(x, masks)}
    for m in (float(v) for v in args.margins.split(",")):
        cx, cm = crop_to_lungs(x, masks, m)
        recipes[f"lung_crop_{m:g}"] = _views(cx, cm)
    feats = {r: {v: _features(img) for v, img in views.items()} for r, views in recipes.items()}
    print(f"features of {len(x)} images x {sum(len(v) for v in recipes.values())} views: "
          f"{time.time() - t0:.0f} s", flush=True)  # fmt: skip
    splits = [s for rep in range(args.repeats) for s in fold_splits(examples, args.folds, rep)]
    report: dict = {"n_parts": len(splits), "recipes": {}}
    for name, f in feats.items():
        aucs = {v: [] for v in VIEWS}
        by_source: dict[str, list[float]] = {}
        for tr, va, te in splits:
            probe = _fitted_probe(f["auc"], y, tr, va)
            for v in VIEWS:
                logits = probe(f[v][te])
                aucs[v].append(metrics.roc_auc(y[te], logits))
                if v == "auc":
                    for s in np.unique(source[te]):
                        sel = source[te] == s
                        if len(set(y[te][sel])) == 2:
                            by_source.setdefault(s, []).append(
                                metrics.roc_auc(y[te][sel], logits[sel])
                            )
        r = {v: _summary(a) for v, a in aucs.items()}
        r["by_source_auc"] = {s: round(float(np.mean(a)), 4) for s, a in by_source.items()}
        report["recipes"][name] = r
        print(name, {v: r[v]["mean_sd"] for v in VIEWS}, r["by_source_auc"], flush=True)
    base = np.array(report["recipes"]["probe_256_inet224"]["auc"]["parts"])
    for name, r in report["recipes"].items():
        if name == "probe_256_inet224":
            continue
        gain = np.array(r["auc"]["parts"]) - base
        r["gain_vs_shipped"] = {
            "mean": round(float(gain.mean()), 4),
            "parts_better": int((gain > 0).sum()),
            "range": [round(float(gain.min()), 4), round(float(gain.max()), 4)],
        }
        print(f"{name}: AUC {gain.mean():+.4f} against the shipped recipe, better in "
              f"{(gain > 0).sum()}/{len(gain)} test parts", flush=True)  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "lung_cv_xray.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
