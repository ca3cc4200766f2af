"""Temperature scaling: one scalar fitted on validation logits so that a probability of
0.8 means about 80% of such scans are positive. It keeps the ranking (AUC) unchanged."""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit(p) / temperature))


def fit_temperature(y_true: np.ndarray, p: np.ndarray) -> float:
    """Grid search of the negative log-likelihood; robust on small validation sets."""
    y = np.asarray(y_true, dtype=np.float64)
    z = logit(p)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    best_t, best_nll = 1.0, np.inf
    for t in grid:
        q = np.clip(1 / (1 + np.exp(-z / t)), _EPS, 1 - _EPS)
        nll = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)
