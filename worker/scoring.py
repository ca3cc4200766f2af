"""Score one batch of stored scans: decode in threads, one model call, result rows.

Kept apart from the Celery task so it can be tested without a broker. Decoding errors
are per file: a bad image gets an error row and the rest go on. While a batch is in the
model, the decode threads already decode the job's next batch (`DecodeAhead`), so the
model waits for pixels as little as possible.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from models.inference import Predictor
from models.ood import Verdict
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


class DecodeAhead:
    """One batch decoded ahead of its task, in this process. A task that finds its
    scans here skips decoding them; one that does not (another worker took the batch
    that was decoded ahead, or the size differs) decodes as usual, so a miss costs only
    the wasted decode."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._futures: dict[int, Future] = {}

    def start(self, batch_id: int, refs: list[ScanRef], size: int) -> None:
        with self._lock:
            if self._key == (batch_id, size):
                return
            self._key = (batch_id, size)
            self._futures = {r.scan_id: _pool.submit(_decode, r, size) for r in refs}

    def take(self, batch_id: int, size: int) -> dict[int, Future]:
        with self._lock:
            if self._key != (batch_id, size):
                return {}
            futures, self._key, self._futures = self._futures, None, {}
            return futures


decode_ahead = DecodeAhead()


def decode_batch(refs: list[ScanRef], size: int, ready: dict[int, Future] | None = None):
    """Arrays (or error messages) for every ref, in order; `ready` holds futures of
    scans decoded ahead."""
    ready = ready or {}
    futures = [ready.get(r.scan_id) or _pool.submit(_decode, r, size) for r in refs]
    return [f.result() for f in futures]


@dataclass(frozen=True)
class ScoringContext:
    """What every row of one job's batch shares."""

    predictor: Predictor
    threshold: float
    job_id: str
    version_id: int
    # Job option: images flagged out of distribution get no probability at all.
    skip_out_of_distribution: bool = False
    # X-ray versions: each scored image's heat-map share inside its lungs (models.lung).
    lung_share: bool = False


SKIPPED_NOTE = "; not scored (the job skips out-of-distribution images)"


@dataclass(frozen=True)
class ResultRow:
    """One scan's result, as db.jobs.store_results writes it (the columns of
    db.models.Result): a probability and label, or an error; the out-of-distribution
    verdict of a scored image."""

    scan_id: int
    job_id: str
    model_version_id: int | None
    probability: float | None = None
    label: str | None = None
    error: str | None = None
    timing_ms: float | None = None
    ood_score: float | None = None
    out_of_distribution: bool | None = None
    ood_reason: str | None = None
    lung_heat_share: float | None = None

    def values(self) -> dict:
        return asdict(self)


def _row(ref: ScanRef, ctx: ScoringContext, error: str | None = None) -> ResultRow:
    return ResultRow(ref.scan_id, ctx.job_id, ctx.version_id, error=error)


def _scored_row(
    ref: ScanRef,
    ctx: ScoringContext,
    p: float,
    verdict: Verdict,
    per_image_ms: float,
    share: float | None = None,
) -> ResultRow:
    row = replace(
        _row(ref, ctx),
        ood_score=verdict.score,
        out_of_distribution=verdict.flagged,
        ood_reason=verdict.reason,
        timing_ms=round(per_image_ms, 3),
    )
    if verdict.flagged and ctx.skip_out_of_distribution:
        return replace(row, ood_reason=verdict.reason + SKIPPED_NOTE)
    # A flagged image keeps its probability for the record; pages, CSV and API warn.
    label = "covid" if p >= ctx.threshold else "non_covid"
    return replace(row, probability=p, label=label, lung_heat_share=share)


def score(
    refs: list[ScanRef],
    ctx: ScoringContext,
    batch_id: int | None = None,
    next_batch: tuple[int, list[ScanRef]] | None = None,
) -> tuple[list[ResultRow], dict]:
    """Result rows for every ref, in order, and the milliseconds spent decoding and in
    the model. With `batch_id`, scans decoded ahead are used; with `next_batch`, that
    batch is decoded while this one is in the model."""
    t0 = time.perf_counter()
    size = ctx.predictor.input_size
    ready = decode_ahead.take(batch_id, size) if batch_id is not None else {}
    decoded = decode_batch(refs, size, ready)
    if next_batch is not None:
        decode_ahead.start(*next_batch, size)
    t1 = time.perf_counter()
    good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    images = np.stack([decoded[i] for i in good]) if good else None
    # The lung share reads the heat maps the same model call returns, when it can, and
    # the batch is segmented once for both (a lung-crop version's call needs the masks).
    with_maps = getattr(ctx.predictor, "predict_judge_and_map", None) if ctx.lung_share else None
    maps = masks = None
    if ctx.lung_share and good:
        from models.lung.share import masks_for_scoring

        masks = masks_for_scoring(ctx.predictor, images)
    t_masks = time.perf_counter()
    if not good:
        probs, verdicts = [], []
    elif with_maps is not None:
        probs, verdicts, maps = with_maps(images, masks)
    else:
        probs, verdicts = ctx.predictor.predict_and_judge(images)
    t_lung = time.perf_counter()
    shares = [None] * len(good)
    if ctx.lung_share and good:
        from models.lung.share import shares_for_scoring

        shares = shares_for_scoring(ctx.predictor, images, maps, masks)
    t2 = time.perf_counter()
    per_image_ms = (t2 - t0) * 1000 / max(len(refs), 1)
    scored = dict(zip(good, zip(probs, verdicts, shares, strict=True), strict=True))
    rows = []
    for i, ref in enumerate(refs):
        if i in scored:
            p, verdict, share = scored[i]
            rows.append(_scored_row(ref, ctx, float(p), verdict, per_image_ms, share))
        else:
            rows.append(_row(ref, ctx, error=decoded[i]))
    model_ms = (t_lung - t_masks) * 1000
    stats = {"decode_ms": round((t1 - t0) * 1000, 2), "model_ms": round(model_ms, 2)}
    if ctx.lung_share:  # the segmenter and the shares
        stats["lung_share_ms"] = round((t2 - t_lung + t_masks - t1) * 1000, 2)
    return rows, stats


POISON_ERROR = (
    "this file stopped the worker process while it was being scored (a crash, or no "
    "end within the batch time limit); it was left out so that the rest of its batch "
    "could be scored"
)


def score_one_by_one(
    refs: list[ScanRef],
    ctx: ScoringContext,
    before_each: Callable[[ScanRef], None],
    after_each: Callable[[ResultRow], None],
) -> list[ResultRow]:
    """The slow, safe path for a batch that failed whole: each file alone, so one bad
    file fails alone. `before_each` records the file in hand (a crash then names it),
    `after_each` stores its result at once."""
    rows = []
    for ref in refs:
        before_each(ref)
        try:
            (row,), _stats = score([ref], ctx)
        except SoftTimeLimitExceeded:  # a hang: the process ends (worker.tasks)
            raise
        except Exception as exc:  # whatever this one file does, the others go on
            row = _row(ref, ctx, error=f"scoring failed: {type(exc).__name__}: {exc}"[:2000])
        after_each(row)
        rows.append(row)
    return rows
