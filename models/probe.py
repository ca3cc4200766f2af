"""The "probe" recipe: a linear classifier on frozen, pretrained features.

With a few hundred scans, fitting millions of weights overfits: under patient-grouped
cross-validation on the development data a logistic regression on Lite0's pooled
activations from several depths beat fine-tuning it (docs/models.md, bench/cv.py).
So the shipped models keep the backbone frozen, pool five depths (the CT model their
spatial spread as well as their mean, at two sizes of the slice), standardise, and fit
an L2-regularised, class-balanced logistic regression whose strength is chosen on the
validation patients, then fit it again with that strength on the training and
validation patients together: with 81 non-COVID X-rays, a third more patients to learn
from raised CV AUC as much as any setting did (docs/models.md). The temperature and the
threshold still come from the first fit's validation scores, which never saw those
patients.
The fitted scaler and weights become two Keras layers, so the saved model is one
ordinary file.
"""

from __future__ import annotations

import numpy as np

from models import metrics
from models.fitting import Fitted, ProgressFn, StopFn

C_GRID = (0.003, 0.01, 0.03, 0.1)


def fit_regression(features: np.ndarray, y: np.ndarray, c: float):
    """(scaler, classifier): standardised, class-balanced, L2-regularised logistic
    regression, the probe's head (also what bench/ scripts fit on cached features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    return scaler, clf.fit(scaler.transform(features), y)


def fit_probe(
    cfg,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Fitted:
    """Features once, one regression per strength in C_GRID (one progress step each),
    the best on validation refitted on training + validation when `cfg.probe_refit`."""
    from models.backbones import attach_linear_head, build_probe_features

    features, pretrained = build_probe_features(
        cfg.backbone,
        cfg.input_size,
        cfg.weights,
        equalize=cfg.equalize,
        crop=cfg.crop,
        taps=tuple(cfg.probe_layers),
        pool=cfg.probe_pool,
        scales=tuple(cfg.probe_scales),
        imagenet_view=cfg.probe_imagenet_view,
    )
    f_train = features.predict(x_train, batch_size=32, verbose=0)
    f_val = features.predict(x_val, batch_size=32, verbose=0)
    grid = (cfg.probe_c,) if cfg.probe_c else C_GRID
    history: dict[str, list] = {"c": [], "val_auc": []}
    best = None
    for epoch, c in enumerate(grid, start=1):
        if should_stop and should_stop():
            break
        scaler, clf = fit_regression(f_train, y_train, c)
        p_val = clf.predict_proba(scaler.transform(f_val))[:, 1]
        val_auc = metrics.roc_auc(y_val, p_val)
        history["c"].append(c)
        history["val_auc"].append(val_auc)
        if progress:
            progress(epoch, {"c": c, "val_auc": val_auc})
        if best is None or val_auc > best[0]:
            best = (val_auc, c, scaler, clf, p_val)
    if best is None:
        raise RuntimeError("stopped before any fit")
    _auc, c, scaler, clf, val_scores = best
    history["chosen_c"] = [c]
    history["fit_on"] = ["training"]
    if cfg.probe_refit and not (should_stop and should_stop()):
        history["fit_on"] = ["training+validation"]
        both = np.concatenate([f_train, f_val]), np.concatenate([y_train, y_val])
        scaler, clf = fit_regression(*both, c)
    variance = np.where(scaler.var_ > 0, scaler.var_, 1.0)  # constant features: as sklearn
    model = attach_linear_head(features, scaler.mean_, variance, clf.coef_[0], clf.intercept_[0])
    return Fitted(model, history, pretrained, val_scores)
