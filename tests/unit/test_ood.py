"""The out-of-distribution score on its own: calibration hits its target rate on
held-out patients, points far from the bank are flagged, blank frames always are."""

import numpy as np
import pytest

from models import ood


def _cloud(rng, n, centre, spread=0.3):
    return centre + spread * rng.standard_normal((n, len(centre)))


def test_calibrated_rate_far_points_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    centre = np.abs(rng.standard_normal(32)) + 1.0
    feats = _cloud(rng, 600, centre)
    groups = [f"p{i // 3}" for i in range(600)]  # three images per patient
    model, held_out = ood.calibrate(feats, groups, k=5, target_rate=0.05)
    assert np.mean(held_out > 1) == pytest.approx(0.05, abs=0.01)
    fresh = _cloud(rng, 2000, centre)  # new patients from the same distribution
    assert np.mean(model.scores(fresh) > 1) == pytest.approx(0.05, abs=0.03)
    far = _cloud(rng, 50, np.abs(rng.standard_normal(32)) + 1.0)
    assert np.all(model.scores(far) > 1)

    model.save(tmp_path)
    again = ood.OODModel.load(tmp_path)
    assert (again.k, again.target_rate) == (5, 0.05)
    np.testing.assert_allclose(again.scores(far), model.scores(far), rtol=1e-2)
    assert ood.OODModel.load(tmp_path / "missing") is None


def test_leave_patient_out_ignores_the_patients_own_copies():
    rng = np.random.default_rng(1)
    base = np.abs(rng.standard_normal((40, 16))) + 0.5
    feats = np.repeat(base, 2, axis=0)  # every patient has an exact copy of each image
    groups = [f"p{i // 2}" for i in range(80)]
    d = ood.leave_group_out_distances(feats, groups, k=1)
    assert np.all(d > 0.01)  # the copy (distance 0) is never the neighbour


def test_few_patients_shrink_k_and_blank_frames_are_flagged():
    rng = np.random.default_rng(2)
    feats = np.abs(rng.standard_normal((6, 8))) + 1
    model, _ = ood.calibrate(feats, ["a", "a", "b", "b", "c", "c"], k=5)
    assert model.k == 2
    images = np.stack([np.full((16, 16, 1), 7.0), rng.uniform(0, 255, (16, 16, 1))])
    verdicts = ood.judge(model, images, np.stack([feats[0], feats[1]]))
    assert verdicts[0].flagged and verdicts[0].reason == ood.BLANK_REASON
    assert verdicts[1].flagged is False and verdicts[1].score is not None
    uncalibrated = ood.judge(None, images, np.zeros((2, 8)))
    assert uncalibrated[0].flagged and uncalibrated[1] == ood.Verdict(None, None, None)
    with pytest.raises(ValueError, match="two patients"):
        ood.calibrate(feats, ["a"] * 6)
