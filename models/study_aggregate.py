"""One score for a study from the scores of its images, and when to give none.

A chest CT of 100 to 500 slices is mostly slices without disease, and many outside the
lungs. Its highest slice probability grows with the number of slices (each is one more
draw at a high value) and follows the oddest slice, not the patient; the mean is
diluted by every healthy slice. The candidates are pure functions of the study's
screened probabilities, measured against each other in bench/study_aggregate.py
(patient-level AUC on the dev sets, and how each behaves as a volume grows from 16 to
500 slices): see the README for the figures and the choice, CHOSEN.

Which images count: a CT slice without lung (models.ct_slice) is not screened and not
counted; an image out of distribution has a probability that means nothing, so it is
left out of the score, and when too large a share of a study's screened images is out
of distribution (MAX_OOD_SHARE), or none is left, the study is indeterminate: ScanQ says
that it does not know these images rather than rank them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models.ct_slice import is_not_screened

TOP_SHARE = 0.25  # "top_quarter": the mean of the highest quarter of the images
TOP_K = 3


def _top_share(share: float) -> Callable[[np.ndarray], float]:
    def mean_of_top(p: np.ndarray) -> float:
        k = max(1, int(np.ceil(share * len(p))))
        return float(np.sort(p)[-k:].mean())

    return mean_of_top


def _top_k(k: int) -> Callable[[np.ndarray], float]:
    return lambda p: float(np.sort(p)[-k:].mean())


def _quantile(q: float) -> Callable[[np.ndarray], float]:
    return lambda p: float(np.quantile(p, q))


def _noisy_or(p: np.ndarray) -> float:
    return float(1.0 - np.prod(1.0 - np.clip(p, 0.0, 1.0)))


# name -> (function of a non-empty float array, what it is, for reports)
AGGREGATES: dict[str, tuple[Callable[[np.ndarray], float], str]] = {
    "max": (lambda p: float(p.max()), "highest image probability"),
    "mean": (lambda p: float(p.mean()), "mean image probability"),
    "top3_mean": (_top_k(TOP_K), f"mean of the {TOP_K} highest image probabilities"),
    "q75": (_quantile(0.75), "75th percentile of the image probabilities"),
    "q90": (_quantile(0.90), "90th percentile of the image probabilities"),
    "noisy_or": (_noisy_or, "noisy-or: 1 - product of (1 - p)"),
    "top10pct_mean": (_top_share(0.10), "mean of the highest 10% of image probabilities"),
    "top_quarter": (
        _top_share(TOP_SHARE),
        f"mean of the highest {TOP_SHARE:.0%} of image probabilities",
    ),
}
# The chosen one (README): on full volumes it neither climbs with the slice count as the
# maximum does nor drowns a focal finding in healthy slices as the mean does.
CHOSEN = "top10pct_mean"

MAX_OOD_SHARE = 0.1  # more of the screened images out of distribution: indeterminate
MIN_SCREENED = 1  # fewer images left to score: indeterminate


def aggregate(probabilities: Sequence[float] | np.ndarray, name: str = CHOSEN) -> float:
    """The named aggregate of a non-empty set of probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        raise ValueError("no probability to aggregate")
    return AGGREGATES[name][0](p)


@dataclass(frozen=True)
class StudyScore:
    score: float | None  # None when abstained
    aggregate: str  # the aggregate's name (AGGREGATES)
    rule: str  # what it is, in words
    n_images: int  # every image given
    n_screened: int  # scored images inside the lungs (CT) / frontal images (X-ray)
    n_outside_lungs: int  # CT slices without lung, not screened
    n_out_of_distribution: int  # screened images flagged out of distribution
    n_scored: int  # screened and in distribution: what the score is over
    abstained: bool
    reason: str | None  # why abstained
    deciding: list[int]  # indices (into the input) of the images the score is over

    def as_dict(self) -> dict:
        return {
            "score": self.score,
            "aggregate": self.aggregate,
            "rule": self.rule,
            "n_images": self.n_images,
            "n_screened": self.n_screened,
            "n_outside_lungs": self.n_outside_lungs,
            "n_out_of_distribution": self.n_out_of_distribution,
            "n_scored": self.n_scored,
            "abstained": self.abstained,
            "reason": self.reason,
        }


def study_score(
    probabilities: Sequence[float | None],
    out_of_distribution: Sequence[bool | None],
    outside_lungs: Sequence[bool] | None = None,
    name: str = CHOSEN,
    max_ood_share: float = MAX_OOD_SHARE,
    min_screened: int = MIN_SCREENED,
) -> StudyScore:
    """The study's score over its screened, in-distribution images, or an abstention
    with the reason. An image with no probability (failed) counts nowhere; one
    `outside_lungs` is counted as such and not screened."""
    n = len(probabilities)
    outside = list(outside_lungs) if outside_lungs is not None else [False] * n
    if len(out_of_distribution) != n or len(outside) != n:
        raise ValueError("one OOD flag and one lung flag per image")
    screened = [i for i in range(n) if probabilities[i] is not None and not outside[i]]
    ood = [i for i in screened if out_of_distribution[i]]
    kept = [i for i in screened if not out_of_distribution[i]]
    n_outside = sum(1 for i in range(n) if outside[i])
    reason = None
    if len(screened) < min_screened:
        what = "lung slices" if n_outside else "images"
        reason = f"indeterminate: no {what} to screen" + (
            f" ({n_outside} of {n} slices show no lung)" if n_outside else ""
        )
    elif len(ood) > max_ood_share * len(screened) or len(kept) < min_screened:
        what = "lung slices" if outside_lungs is not None and n_outside else "images"
        reason = (
            f"indeterminate: {len(ood)} of {len(screened)} {what} unlike the scans "
            "the model was trained on"
        )
    score = None
    if reason is None:
        score = aggregate([probabilities[i] for i in kept], name)
    return StudyScore(
        score=score,
        aggregate=name,
        rule=AGGREGATES[name][1],
        n_images=n,
        n_screened=len(screened),
        n_outside_lungs=n_outside,
        n_out_of_distribution=len(ood),
        n_scored=len(kept) if reason is None else 0,
        abstained=reason is not None,
        reason=reason,
        deciding=kept if reason is None else [],
    )


def summarise(rows: Sequence) -> dict:
    """The verdict of one group of stored results (a series, a modality): what
    pacs.verdict and db.jobs.series_summary show. Each row has scan_id, probability,
    label, out_of_distribution, error, threshold and version_id (of the version that scored it;
    None when unscored); a row whose error is a "not screened" reason (a CT slice
    without lung) is counted apart, not as a failure."""
    outside = [is_not_screened(r.error) for r in rows]
    probabilities = [r.probability for r in rows]
    flags = [bool(r.out_of_distribution) for r in rows]
    result = study_score(probabilities, flags, outside)
    scored = [r for r in rows if r.probability is not None]
    best = max(scored, key=lambda r: r.probability, default=None)
    deciding = [rows[i] for i in result.deciding]
    # The threshold of the newest version that scored these images.
    versions = sorted(
        (r for r in scored if r.threshold is not None), key=lambda r: r.version_id or 0
    )
    threshold = versions[-1].threshold if versions else None
    top = max(deciding, key=lambda r: r.probability, default=None)
    label = None
    if result.score is not None and threshold is not None:
        label = "covid" if result.score >= threshold else "non_covid"
    elif top is not None:  # no version's threshold known: the top image's own label
        label = top.label
    return {
        "images": len(rows),
        "scored": len(scored),
        "failed": sum(1 for r, out in zip(rows, outside, strict=True) if r.error and not out),
        "out_of_distribution": sum(1 for r in scored if r.out_of_distribution),
        "score": result.score,
        "label": label,
        "threshold": threshold,
        # The highest image of those the score is over (the one to look at first).
        "deciding_scan_id": None if top is None else top.scan_id,
        "max_probability": None if best is None else best.probability,
        "max_scan_id": None if best is None else best.scan_id,
        "flagged": result.abstained,
        **{k: v for k, v in result.as_dict().items() if k != "score"},
    }
