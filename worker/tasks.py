"""Celery tasks. Each reads its work from SQL and writes results back idempotently, so a
redelivered or re-queued task does no harm."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta

from celery import current_app, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from db.jobs import (
    claim_batch,
    fail_stalled_uploads,
    finish_batch,
    next_queued_batch,
    pending_scans,
    refresh_job,
    set_probing,
    store_results,
)
from db.models import Batch, Job, ModelVersion, utcnow
from db.schedules import all_schedules, fail_runs_of_jobs
from db.session import session_scope
from db.training_jobs import fail_stalled_training, unsent_training_jobs
from scanq.settings import get_settings
from worker.celery_app import RECONCILE, SCORE_BATCH
from worker.sending import send_batches, send_training

log = logging.getLogger(__name__)
# Deliveries of a batch that may die whole before it is scored one file at a time.
ISOLATE_AFTER_ATTEMPTS = 2
EXIT_TIMED_OUT = 75  # the worker process's exit status after a batch's time limit


@shared_task(
    name=SCORE_BATCH,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=20,
)
def score_batch(batch_id: int) -> str:
    """Score one batch with one model call. A batch whose whole-batch attempts keep
    dying (a file that crashes the decoder or the process, or hangs past the time
    limit), or that raises, is scored one file at a time instead, so a poison file
    fails alone."""
    try:
        return _score_batch(batch_id)
    except SoftTimeLimitExceeded:
        # A thread may still be stuck on the file; only a new process is clean. Dying
        # here is the path of a crash: the batch goes back on the queue (reject on
        # worker lost) and its next deliveries find the file that hangs.
        log.error("batch %s ran past its time limit (SCANQ_BATCH_TIME_LIMIT); ending this "
                  "worker process so that the batch is delivered again", batch_id)  # fmt: skip
        logging.shutdown()
        os._exit(EXIT_TIMED_OUT)


def _score_batch(batch_id: int) -> str:
    from worker import runtime
    from worker.scoring import POISON_ERROR, ScanRef, ScoringContext, score

    settings = get_settings()
    url = settings.database_url
    with session_scope(url) as session:
        batch = claim_batch(session, batch_id)
        if batch is None:
            return "skipped"
        job = session.get(Job, batch.job_id)
        version = session.get(ModelVersion, job.model_version_id)
        refs = [
            ScanRef(s.id, settings.data_dir / s.stored_path)
            for s in pending_scans(session, batch_id)
        ]
        job_id, threshold = job.id, version.threshold
        skip_ood = bool((job.options or {}).get("skip_out_of_distribution"))
        version_args = (version.id, version.path, version.temperature, version.backbone)
        queued = (batch.started_at - batch.enqueued_at) if batch.enqueued_at else None
        suspect, isolate = batch.probing_scan_id, batch.attempts > ISOLATE_AFTER_ATTEMPTS
        upcoming = next_queued_batch(session, batch)
        next_batch = upcoming and (
            upcoming[0],
            [ScanRef(s.id, settings.data_dir / s.stored_path) for s in upcoming[1]],
        )
    stats: dict = {"n": len(refs)}
    if queued is not None:
        stats["queue_ms"] = round(queued.total_seconds() * 1000, 2)
    rows = []
    if suspect is not None:  # the last attempt died on this file
        log.warning("batch %s: scan %s crashed the worker; leaving it out", batch_id, suspect)
        rows.append({"scan_id": suspect, "job_id": job_id, "model_version_id": version_args[0],
                     "error": POISON_ERROR})  # fmt: skip
        refs = [r for r in refs if r.scan_id != suspect]
    if refs:
        predictor = runtime.predictor_for(settings, *version_args)
        ctx = ScoringContext(predictor, threshold, job_id, version_args[0], skip_ood)
        if not isolate:
            try:
                scored, timings = score(refs, ctx, batch_id, next_batch)
                rows += scored
                stats |= timings
            except SoftTimeLimitExceeded:
                raise
            except Exception:
                log.exception("batch %s failed whole; scoring its files one by one", batch_id)
                isolate = True
        if isolate:
            rows += _score_isolated(url, batch_id, refs, ctx)
    t0 = time.perf_counter()
    with session_scope(url) as session:
        # Rows scored one by one are already stored; the unique scan key skips them here.
        store_results(session, rows)
        stats["write_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        set_probing(session, batch_id, None)
        finish_batch(session, batch_id, stats)
        refresh_job(session, job_id)
    return f"scored {len(rows)}"


def _score_isolated(url, batch_id, refs, ctx) -> list[dict]:
    from worker.scoring import score_one_by_one

    def before_each(ref) -> None:
        with session_scope(url) as session:
            set_probing(session, batch_id, ref.scan_id)

    def after_each(row: dict) -> None:
        with session_scope(url) as session:
            store_results(session, [row])

    return score_one_by_one(refs, ctx, before_each, after_each)


@shared_task(name=RECONCILE)
def reconcile(
    stale_after_seconds: int | None = None,
    training_stall_seconds: int | None = None,
    upload_stall_seconds: int | None = None,
) -> int:
    """SQL is the source of truth; this periodic task repairs what the broker lost.
    Returns the number of batches re-queued."""
    settings = get_settings()

    def ago(seconds: int | None, default: int) -> datetime:
        return utcnow() - timedelta(seconds=default if seconds is None else seconds)

    cutoff = ago(stale_after_seconds, settings.visibility_timeout)
    _sync_schedules(settings)
    _reconcile_training(settings, cutoff, ago(training_stall_seconds,
                                               settings.training_stall_seconds))  # fmt: skip
    with session_scope(settings.database_url) as session:
        silent_since = ago(upload_stall_seconds, settings.upload_stall_seconds)
        for job_id in fail_stalled_uploads(session, silent_since):
            log.warning("upload of job %s stopped arriving; job failed", job_id)
    return _requeue_stale_batches(settings, cutoff)


def _sync_schedules(settings) -> None:
    """Re-create beat entries lost with Redis; drop those of deleted schedules."""
    from worker.beat import sync_all

    with session_scope(settings.database_url) as session:
        rows = all_schedules(session)
        sync_all(current_app, rows)


def _reconcile_training(settings, sent_before: datetime, silent_since: datetime) -> None:
    """Training runs are never restarted: one whose worker went silent is failed, one
    whose message was lost before it started is sent again (it is claimed once)."""
    with session_scope(settings.database_url) as session:
        stalled = fail_stalled_training(session, silent_since)
        for job_id in stalled:
            log.warning("training job %s stopped reporting; marked failed", job_id)
        fail_runs_of_jobs(session, stalled, "the training job stopped reporting")
        resend = unsent_training_jobs(session, sent_before)
    send_training(settings.database_url, current_app.send_task, resend)


def _requeue_stale_batches(settings, cutoff: datetime) -> int:
    """Re-queue batches whose task was lost: still queued long after enqueueing, or
    running far beyond any normal batch. Duplicates are harmless because results are
    written idempotently."""
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(Batch.id)
            .join(Job, Job.id == Batch.job_id)
            .where(
                Job.status.in_(("receiving", "queued", "running")),
                Batch.status.in_(("queued", "running")),
                ((Batch.enqueued_at.is_(None)) | (Batch.enqueued_at < cutoff)),
                ((Batch.started_at.is_(None)) | (Batch.started_at < cutoff)),
            )
        ).all()
        ids = [r[0] for r in rows]
    send_batches(settings.database_url, current_app.send_task, ids)
    if ids:
        log.warning("re-queued %d stale batches", len(ids))
    return len(ids)
