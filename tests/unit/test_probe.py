"""The probe recipe: the Keras head reproduces the fitted scikit-learn pipeline, and a
real run on CT slices saves a model that reloads to the same predictions."""

import numpy as np
import pytest

from models.backbones import attach_linear_head
from models.card import render_card
from models.dataset import load_examples
from models.decode import load_arrays
from models.train import TrainConfig, train
from models.version import save_version


def test_linear_head_equals_the_sklearn_pipeline():
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    feats = rng.normal(3.0, 2.0, (80, 12)).astype("float32")
    feats[:, 5] = 1.0  # a constant feature: zero variance must not divide by zero
    y = (feats[:, 0] + rng.normal(0, 1, 80) > 3).astype(int)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced"))
    pipe.fit(feats, y)
    scaler, clf = pipe
    inp = keras.Input((12,))
    identity = keras.Model(inp, keras.layers.Identity()(inp), name="probe_test")
    var = np.where(scaler.var_ > 0, scaler.var_, 1.0)
    model = attach_linear_head(identity, scaler.mean_, var, clf.coef_[0], clf.intercept_[0])
    ours = np.asarray(model(feats)).reshape(-1)
    np.testing.assert_allclose(ours, pipe.predict_proba(feats)[:, 1], atol=1e-5)


def test_probe_run_on_real_slices_saves_what_it_scored(shared_data, tmp_path):
    import keras

    import models.layers  # noqa: F401 - the saved model holds HistogramEqualization

    every = load_examples(shared_data, "ct")
    examples = [e for e in every if e.label == 1][:24] + [e for e in every if e.label == 0][:24]
    cfg = TrainConfig(modality="ct", recipe="probe", equalize=True, input_size=64)
    result = train(cfg, examples)
    card = result.card
    assert card["pretrained"] is True and card["config"]["recipe"] == "probe"
    assert card["history"]["chosen_c"][0] in card["history"]["c"]
    assert len(card["history"]["val_auc"]) == 4  # the validation grid of C
    # bench/cv.py's figures for the setting, as `--cv-report` puts them in the card
    result.card["cross_validation"] = {
        "setting": "probe",
        "summary_mean_sd": {
            "auc": [0.7, 0.02],
            "sensitivity": [0.9, 0.1],
            "specificity": [0.4, 0.1],
        },
        "auc_per_repeat": [0.71, 0.69],
        "folds_per_repeat": 2,
        "folds": [{"auc": a} for a in (0.7, 0.72, 0.68, 0.7)],
    }
    out = save_version(result, tmp_path / "v", command="test")
    text = (out / "MODEL_CARD.md").read_text()
    assert "linear probe on frozen pooled features" in text
    assert "patient-grouped 2-fold cross-validation" in text
    assert "AUC 0.700 ± 0.020 (mean ± sd over 4 test parts: 2 partitions into 2 folds; " in text
    assert "mean of each partition 0.710, 0.690)" in text
    x = load_arrays(examples[:6], 64)
    again = keras.models.load_model(out / "model.keras", compile=False)
    np.testing.assert_allclose(
        np.asarray(again(x)), np.asarray(result.model(x)), rtol=1e-5, atol=1e-6
    )


def test_probe_scales_add_the_same_backbone_at_another_size(shared_data, tmp_path):
    """With `scales`, the input size's features are exactly those of the plain probe,
    the extra size's follow them, and the model saves, reloads and can be explained."""
    import keras

    import models.layers  # noqa: F401 - the saved model holds HistogramEqualization
    from models.backbones import build_probe_features
    from models.gradcam import _target_layers, explainer

    x = load_arrays(load_examples(shared_data, "ct")[:4], 64)
    plain, _ = build_probe_features("efficientnet_lite0", 64, "auto", equalize=True)
    both, pretrained = build_probe_features(
        "efficientnet_lite0", 64, "auto", equalize=True, scales=(96,)
    )
    assert pretrained
    f_plain, f_both = np.asarray(plain(x)), np.asarray(both(x))
    n = f_plain.shape[1]
    assert f_both.shape == (4, 2 * n)
    np.testing.assert_allclose(f_both[:, :n], f_plain, rtol=1e-5, atol=1e-6)
    assert not np.allclose(f_both[:, n:], f_plain, atol=1e-3)  # another view, not a copy

    model = attach_linear_head(both, f_both.mean(0), f_both.var(0) + 1, np.ones(2 * n) / n, 0.0)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    # the heat map takes every pooled depth at both sizes, on the finest grid (96 / 16)
    assert len(_target_layers(again)) == 2 * len(_target_layers(plain_head(plain)))
    prob, cam = explainer(again)(x[0])
    assert prob == pytest.approx(float(np.asarray(model(x[:1]))[0, 0]), abs=1e-5)
    assert cam.shape == (6, 6) and cam.max() == pytest.approx(1.0)


def plain_head(features):
    n = int(features.output.shape[1])
    return attach_linear_head(features, np.zeros(n), np.ones(n), np.ones(n), 0.0)


@pytest.mark.parametrize("backbone", ["densenet121", "mobilenetv2"])
def test_probe_scales_build_for_keras_applications(backbone):
    """Stems that normalise by ImageNet mean and spread (DenseNet) or only rescale
    (MobileNetV2), with a border crop, at two sizes: every layer name stays unique."""
    from models.backbones import build_probe_features

    model, _ = build_probe_features(backbone, 64, None, crop=0.1, scales=(96,))
    plain, _ = build_probe_features(backbone, 64, None, crop=0.1)
    out = np.asarray(model(np.full((1, 64, 64, 1), 128.0, np.float32)))
    assert out.shape == (1, 2 * int(plain.output.shape[1]))


def test_probe_scales_must_differ():
    from models.backbones import build_probe_features

    with pytest.raises(ValueError, match="differ from each other"):
        build_probe_features("smallcnn", 64, None, scales=(64,))


def test_probe_refit_learns_from_validation_but_is_judged_by_the_first_fit(shared_data):
    """The refit probe is the regression with the chosen C on training + validation
    features, while its threshold, temperature and validation report stay those of the
    first fit, which never saw the validation patients."""
    from dataclasses import replace

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from models.backbones import build_probe_features
    from models.dataset import train_val_test

    every = load_examples(shared_data, "ct")
    examples = [e for e in every if e.label == 1][:24] + [e for e in every if e.label == 0][:24]
    split = train_val_test(examples, seed=0)
    cfg = TrainConfig(modality="ct", recipe="probe", equalize=True, input_size=64)
    refit = train(cfg, examples, split=split)
    first = train(replace(cfg, probe_refit=False), examples, split=split)
    assert refit.card["split"]["model_fit_on"] == "training+validation"
    assert first.card["split"]["model_fit_on"] == "training"
    for key in ("threshold", "temperature", "validation"):
        assert refit.card[key] == first.card[key]

    tr, va, te = split
    seen = np.concatenate([tr, va])
    x = load_arrays(examples, 64)
    y = np.array([e.label for e in examples])
    features, _ = build_probe_features("efficientnet_lite0", 64, "auto", equalize=True)
    f = np.asarray(features.predict(x, verbose=0))
    scaler = StandardScaler().fit(f[seen])
    c = refit.card["history"]["chosen_c"][0]
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    clf.fit(scaler.transform(f[seen]), y[seen])
    p_refit = np.asarray(refit.model(x[te])).reshape(-1)
    np.testing.assert_allclose(p_refit, clf.predict_proba(scaler.transform(f[te]))[:, 1], atol=1e-4)
    assert not np.allclose(p_refit, np.asarray(first.model(x[te])).reshape(-1), atol=1e-3)
    text = render_card(refit.card)
    assert "fitted on the training+validation patients" in text
    assert "this version is that probe fitted again" in text


def test_imagenet_view_adds_the_torch_fed_networks_last_layer(shared_data, monkeypatch):
    """The view's features are exactly the deepest layer's mean of the same weights fed
    the unequalised image, resized inside the model and scaled by ImageNet's mean and
    spread; the probe's own features before them are unchanged, and the explainer
    reads the extra map too."""
    from dataclasses import replace

    import tensorflow as tf

    from models import backbones
    from models.backbones import build_probe_features
    from models.gradcam import _target_layers, explainer

    x = load_arrays(load_examples(shared_data, "xray")[:3], 64)
    plain, _ = build_probe_features("efficientnet_lite0", 64, "auto", equalize=True)
    viewed, _ = build_probe_features(
        "efficientnet_lite0", 64, "auto", equalize=True, imagenet_view=96
    )
    spec = backbones.BACKBONES["efficientnet_lite0"]
    monkeypatch.setitem(
        backbones.BACKBONES, "efficientnet_lite0", replace(spec, scaling=backbones._TORCH)
    )
    torch_fed, _ = build_probe_features("efficientnet_lite0", 96, "auto", taps=("head_relu",))
    f_plain, f_view = np.asarray(plain(x)), np.asarray(viewed(x))
    n = f_plain.shape[1]
    assert f_view.shape == (3, n + 1280)
    np.testing.assert_allclose(f_view[:, :n], f_plain, rtol=1e-5, atol=1e-5)
    resized = tf.image.resize(x, (96, 96), antialias=True)
    np.testing.assert_allclose(f_view[:, n:], np.asarray(torch_fed(resized)), rtol=1e-4, atol=1e-4)
    assert not np.allclose(f_view[:, n:], f_plain[:, -1280:], atol=1e-2)

    m = f_view.shape[1]
    model = attach_linear_head(viewed, f_view.mean(0), f_view.var(0) + 1, np.ones(m) / m, 0.0)
    assert len(_target_layers(model)) == len(_target_layers(plain_head(plain))) + 1
    prob, cam = explainer(model)(x[0])
    assert prob == pytest.approx(float(np.asarray(model(x[:1]))[0, 0]), abs=1e-5)
    assert cam.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 32 px"):
        build_probe_features("smallcnn", 64, None, imagenet_view=16)
