"""Screening metrics in plain NumPy, so the web, the CLI and tests can use them without
TensorFlow. AUC is the Mann-Whitney statistic (ties count one half); its 95% interval is
a patient-level bootstrap when patient ids are given, since images of one patient are not
independent."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def roc_auc(y_true: Sequence[int], scores: Sequence[float]) -> float:
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # 1-based ranks, ties sharing their average rank (vectorised: the bootstrap calls
    # this a thousand times, on every confirmed label of a site's monitoring)
    _, tie, counts = np.unique(s, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    ranks = (starts + (counts + 1) / 2.0)[tie.reshape(-1)]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0,0) to (1,1)."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    thresholds = np.unique(s)[::-1]
    tpr = [0.0] + [float((s[y] >= t).mean()) if y.any() else 0.0 for t in thresholds]
    fpr = [0.0] + [float((s[~y] >= t).mean()) if (~y).any() else 0.0 for t in thresholds]
    return np.asarray(fpr), np.asarray(tpr)


def bootstrap_auc_ci(
    y_true: Sequence[int],
    scores: Sequence[float],
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile interval of the AUC, resampling whole groups (patients)."""
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(groups if groups is not None else np.arange(len(y)).astype(str))
    # Each group's members, ascending, laid end to end: a resample of whole groups is
    # then one gather instead of a concatenation of a list per draw.
    _, codes, counts = np.unique(g, return_inverse=True, return_counts=True)
    codes = codes.reshape(-1)
    order = np.argsort(codes, kind="stable")
    starts = np.cumsum(counts) - counts
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(counts), len(counts))
        lens = counts[pick]
        ends = np.cumsum(lens)
        idx = order[np.repeat(starts[pick] - ends + lens, lens) + np.arange(ends[-1])]
        a = roc_auc(y[idx], s[idx])
        if not np.isnan(a):
            aucs.append(a)
    if not aucs:
        return float("nan"), float("nan")
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def threshold_for_sensitivity(
    y_true: Sequence[int], scores: Sequence[float], target: float = 0.9
) -> float:
    """The highest threshold whose sensitivity reaches `target` (a screening operating
    point: missing a positive costs more than a second look at a negative)."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pos = np.sort(s[y])[::-1]
    if len(pos) == 0:
        return 0.5
    k = int(np.ceil(target * len(pos))) - 1
    return float(pos[min(max(k, 0), len(pos) - 1)])


def confusion(y_true: Sequence[int], scores: Sequence[float], threshold: float) -> dict[str, int]:
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(scores, dtype=np.float64) >= threshold
    return {
        "tp": int((p & y).sum()),
        "fn": int((~p & y).sum()),
        "tn": int((~p & ~y).sum()),
        "fp": int((p & ~y).sum()),
    }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def screening_report(
    y_true: Sequence[int],
    scores: Sequence[float],
    threshold: float,
    groups: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
) -> dict:
    """AUC with CI, sensitivity, specificity, accuracy and counts; per source when given."""
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    c = confusion(y, s, threshold)
    auc = roc_auc(y, s)
    report = {
        "auc": None if np.isnan(auc) else round(auc, 4),
        "auc_ci95": [None if np.isnan(v) else round(v, 4) for v in bootstrap_auc_ci(y, s, groups)],
        "sensitivity": _round(_ratio(c["tp"], c["tp"] + c["fn"])),
        "specificity": _round(_ratio(c["tn"], c["tn"] + c["fp"])),
        "accuracy": _round(_ratio(c["tp"] + c["tn"], len(y))),
        "threshold": round(float(threshold), 6),
        "n": int(len(y)),
        "n_covid": int(y.sum()),
        "n_non_covid": int(len(y) - y.sum()),
        "confusion": c,
    }
    if groups is not None:
        report["n_patients"] = int(len(set(groups)))
    if sources is not None:
        src = np.asarray(sources)
        report["by_source"] = {
            name: screening_report(
                y[src == name],
                s[src == name],
                threshold,
                None if groups is None else list(np.asarray(groups)[src == name]),
            )
            for name in sorted(set(sources))
        }
    return report


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
