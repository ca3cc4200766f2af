"""Score one batch of stored scans: decode in threads, one model call, result rows.

Kept apart from the Celery task so it can be benchmarked and tested without a broker.
Decoding errors are per file: a bad image gets an error row and the rest go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.preprocess import ImageError, load_for_model

_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")


@dataclass(frozen=True)
class ScanRef:
    scan_id: int
    path: Path


def _decode(ref: ScanRef, size: int) -> np.ndarray | str:
    try:
        return load_for_model(ref.path, size)
    except ImageError as exc:
        return str(exc)
    except FileNotFoundError:
        return "stored file is missing"


def score(
    refs: list[ScanRef],
    predictor,
    threshold: float,
    job_id: str,
    version_id: int,
) -> tuple[list[dict], dict]:
    """Result rows (dicts for db.jobs.store_results) for every ref, in order, and the
    milliseconds spent decoding and in the model."""
    t0 = time.perf_counter()
    decoded = list(_pool.map(lambda r: _decode(r, predictor.input_size), refs))
    t1 = time.perf_counter()
    good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    probs = predictor.predict(np.stack([decoded[i] for i in good])) if good else []
    t2 = time.perf_counter()
    per_image_ms = (t2 - t0) * 1000 / max(len(refs), 1)
    prob_of = dict(zip(good, probs, strict=True))
    rows = []
    for i, ref in enumerate(refs):
        row = {"scan_id": ref.scan_id, "job_id": job_id, "model_version_id": version_id}
        if i in prob_of:
            p = float(prob_of[i])
            row |= {
                "probability": p,
                "label": "covid" if p >= threshold else "non_covid",
                "timing_ms": round(per_image_ms, 3),
            }
        else:
            row["error"] = decoded[i]
        rows.append(row)
    stats = {"decode_ms": round((t1 - t0) * 1000, 2), "model_ms": round((t2 - t1) * 1000, 2)}
    return rows, stats


POISON_ERROR = (
    "this file stopped the worker process while it was being scored; it was left out "
    "so that the rest of its batch could be scored"
)


def score_one_by_one(
    refs: list[ScanRef],
    predictor,
    threshold: float,
    job_id: str,
    version_id: int,
    before_each: Callable[[ScanRef], None],
    after_each: Callable[[dict], None],
) -> list[dict]:
    """The slow, safe path for a batch that failed whole: each file alone, so one bad
    file fails alone. `before_each` records the file in hand (a crash then names it),
    `after_each` stores its result at once."""
    rows = []
    for ref in refs:
        before_each(ref)
        try:
            (row,), _stats = score([ref], predictor, threshold, job_id, version_id)
        except Exception as exc:  # whatever this one file does, the others go on
            row = {"scan_id": ref.scan_id, "job_id": job_id, "model_version_id": version_id,
                   "error": f"scoring failed: {type(exc).__name__}: {exc}"[:2000]}  # fmt: skip
        after_each(row)
        rows.append(row)
    return rows
