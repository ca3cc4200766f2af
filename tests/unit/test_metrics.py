import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models import calibration, metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_including_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes ties
    assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_undefined_with_one_class():
    assert np.isnan(metrics.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_threshold_reaches_target_sensitivity():
    y = np.array([1] * 10 + [0] * 10)
    s = np.concatenate([np.linspace(0.5, 0.95, 10), np.linspace(0.0, 0.6, 10)])
    t = metrics.threshold_for_sensitivity(y, s, 0.9)
    sens = (s[y == 1] >= t).mean()
    assert sens >= 0.9
    # and it is the highest such threshold: the next positive up would miss the target
    assert (s[y == 1] >= np.nextafter(t, 1)).mean() < 0.9


def test_report_counts_and_per_source():
    y = [1, 1, 0, 0, 1, 0]
    s = [0.9, 0.8, 0.1, 0.7, 0.4, 0.2]
    r = metrics.screening_report(y, s, 0.5, groups=list("aabbcd"), sources=list("xxxyyy"))
    assert r["confusion"] == {"tp": 2, "fn": 1, "tn": 2, "fp": 1}
    assert r["sensitivity"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["specificity"] == pytest.approx(2 / 3, abs=1e-4)
    assert set(r["by_source"]) == {"x", "y"}
    assert r["by_source"]["x"]["n"] == 3
    lo, hi = r["auc_ci95"]
    assert lo <= r["auc"] <= hi


def test_temperature_scaling_keeps_order_and_improves_nll():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    logits = (y * 2 - 1) * 1.0 + rng.normal(0, 1, 500)
    overconfident = 1 / (1 + np.exp(-logits * 4))
    t = calibration.fit_temperature(y, overconfident)
    fixed = calibration.apply_temperature(overconfident, t)
    assert t > 2
    assert np.array_equal(np.argsort(fixed), np.argsort(overconfident))
    assert calibration.expected_calibration_error(
        y, fixed
    ) < calibration.expected_calibration_error(y, overconfident)
