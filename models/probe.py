"""The "probe" recipe: a linear classifier on frozen, pretrained features.

With a few hundred scans, fitting millions of weights overfits: under patient-grouped
cross-validation on the development data (three folds, the same splits), fine-tuning
Lite0 reached CT AUC 0.785-0.814, and a logistic regression on its pooled activations
from several depths 0.818 (224 px) and 0.850 (288 px); see the README and bench/cv.py.
So the shipped models keep the backbone frozen, pool five depths (the CT model their
spatial spread as well as their mean, at two sizes of the slice), standardise, and fit
an L2-regularised, class-balanced logistic regression whose strength is chosen on the
validation patients, then fit it again with that strength on the training and
validation patients together: with 81 non-COVID X-rays, a quarter more patients to learn
from raised CV AUC more than any setting did (README). The temperature and the
threshold still come from the first fit's validation scores, which never saw those
patients.
The fitted scaler and weights become two Keras layers, so the saved model is one
ordinary file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models import metrics

C_GRID = (0.003, 0.01, 0.03, 0.1)


def fit_probe(
    cfg,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    progress: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
):
    """A `models.train.Fitted`, like `models.train._fit`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from models.backbones import attach_linear_head, build_probe_features
    from models.train import Fitted

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
    scaler = StandardScaler().fit(f_train)
    s_train, s_val = scaler.transform(f_train), scaler.transform(f_val)
    grid = (cfg.probe_c,) if cfg.probe_c else C_GRID
    history: dict[str, list] = {"c": [], "val_auc": []}
    best = None
    for epoch, c in enumerate(grid, start=1):
        if should_stop and should_stop():
            break
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        clf.fit(s_train, y_train)
        val_auc = metrics.roc_auc(y_val, clf.predict_proba(s_val)[:, 1])
        history["c"].append(c)
        history["val_auc"].append(val_auc)
        if progress:
            progress(epoch, {"c": c, "val_auc": val_auc})
        if best is None or val_auc > best[0]:
            best = (val_auc, c, clf)
    if best is None:
        raise RuntimeError("stopped before any fit")
    _auc, c, clf = best
    history["chosen_c"] = [c]
    val_scores = clf.predict_proba(s_val)[:, 1]
    history["fit_on"] = ["training"]
    if cfg.probe_refit and not (should_stop and should_stop()):
        history["fit_on"] = ["training+validation"]
        f_all = np.concatenate([f_train, f_val])
        scaler = StandardScaler().fit(f_all)
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        clf.fit(scaler.transform(f_all), np.concatenate([y_train, y_val]))
    variance = np.where(scaler.var_ > 0, scaler.var_, 1.0)  # constant features: as sklearn
    model = attach_linear_head(features, scaler.mean_, variance, clf.coef_[0], clf.intercept_[0])
    return Fitted(model, history, pretrained, val_scores)
