"""Study scores (models.study_aggregate): the chosen aggregate does not climb with the
number of healthy slices the way the maximum does, slices without lung do not count,
and a study whose images are mostly unlike the training scans gets no score."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from models import study_aggregate as sa
from models.ct_slice import NO_LUNG


def test_adding_negative_slices_does_not_push_the_score_up_as_max_does():
    rng = np.random.default_rng(0)
    negatives = rng.beta(2, 8, 5000)  # slice probabilities of a healthy volume, mean 0.2
    small, full, large = negatives[:16], negatives[:100], negatives[:500]
    max_growth = sa.aggregate(large, "max") - sa.aggregate(small, "max")
    assert max_growth > 0.25
    assert sa.aggregate(large) - sa.aggregate(small) < max_growth / 3
    assert abs(sa.aggregate(large) - sa.aggregate(full)) < 0.04  # full volumes: stable
    # A diseased volume (a quarter of its slices high) stays above the healthy one at
    # every size.
    for n in (16, 100, 500):
        sick = np.r_[rng.beta(8, 2, n // 4), negatives[: n - n // 4]]
        assert sa.aggregate(sick) > sa.aggregate(negatives[:n]) + 0.2


def test_every_candidate_is_defined_on_one_image_and_equals_it():
    for name in sa.AGGREGATES:
        assert sa.aggregate([0.37], name) == 0.37
    assert sa.CHOSEN in sa.AGGREGATES


def test_slices_without_lung_are_counted_apart_and_left_out():
    p = [0.9, 0.1, 0.2, 0.95]
    outside = [True, False, False, True]
    score = sa.study_score(p, [False] * 4, outside)
    assert (score.n_screened, score.n_outside_lungs, score.abstained) == (2, 2, False)
    assert score.score == sa.aggregate([0.1, 0.2]) and score.deciding == [1, 2]
    none = sa.study_score(p, [False] * 4, [True] * 4)
    assert none.abstained and none.score is None and "no lung slices" in none.reason


def test_too_many_images_out_of_distribution_is_an_abstention_with_the_reason():
    p = list(np.linspace(0.0, 1.0, 100))
    ood = [i % 3 == 0 for i in range(100)]  # 34 of 100
    score = sa.study_score(p, ood, [False] * 100)
    assert score.abstained and score.score is None
    assert (
        score.reason == "indeterminate: 34 of 100 images unlike the scans the model was trained on"
    )
    few = sa.study_score(p, [i < 5 for i in range(100)])
    assert not few.abstained and few.n_scored == 95 and few.n_out_of_distribution == 5
    assert sa.study_score([0.8], [True]).abstained  # one image, and it is unlike them


def test_summarise_reads_stored_results():
    """The rows pacs.verdict and the job's series summary pass: a failure, a slice
    without lung, an image out of distribution, and scored ones."""

    def row(i, p=None, ood=False, error=None):
        version = 3 if p is not None else None
        return SimpleNamespace(scan_id=i, probability=p, label=None, out_of_distribution=ood,
                               error=error, threshold=0.5 if version else None,
                               version_id=version)  # fmt: skip

    rows = [row(1, 0.9), row(2, 0.2), row(3, error="cannot decode"), row(4, error=NO_LUNG),
            row(5, 0.99, ood=True)] + [row(i, 0.05 * (i - 5)) for i in range(6, 16)]  # fmt: skip
    s = sa.summarise(rows)
    assert (s["images"], s["scored"], s["failed"], s["n_outside_lungs"]) == (15, 13, 1, 1)
    assert (s["n_screened"], s["n_out_of_distribution"], s["abstained"]) == (13, 1, False)
    assert s["score"] == sa.aggregate([0.9, 0.2] + [0.05 * k for k in range(1, 11)])
    assert s["label"] == ("covid" if s["score"] >= 0.5 else "non_covid")
    assert s["max_probability"] == 0.99 and s["max_scan_id"] == 5 and s["deciding_scan_id"] == 1
    assert s["aggregate"] == sa.CHOSEN and not s["flagged"]
    worse = sa.summarise(rows[:8])  # 1 of 6 screened images out of distribution: too many
    assert worse["abstained"] and worse["flagged"] and worse["label"] is None
    assert worse["reason"].startswith("indeterminate: 1 of 6 lung slices unlike")
