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

from db.jobs import fail_stalled_uploads, finish_batch, refresh_job, set_probing, store_results
from db.models import Batch, Job, utcnow
from db.schedules import all_schedules, fail_runs_of_jobs
from db.session import session_scope
from db.training_jobs import fail_stalled_training, unsent_training_jobs
from models.inference import Predictor
from models.lung.modalities import SHARE_MODALITIES
from scanq.settings import get_settings
from worker.batch_work import BatchWork, claim_work, version_of_batch
from worker.celery_app import RECONCILE, SCORE_BATCH
from worker.sending import send_batches, send_training

log = logging.getLogger(__name__)
EXIT_TIMED_OUT = 75  # the worker process's exit status after a batch's time limit
# How long a delivery whose model version is still loading here waits for it before it
# leaves the batch for a later delivery (capped at a quarter of the batch time limit).
MODEL_WAIT_SECONDS = 5.0


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
    """Score the batch once its model version is loaded in this process; until then,
    leave it to a later delivery (worker.warmup), so the time limit never counts a load."""
    settings = get_settings()
    try:
        taken = _take(settings, batch_id)
    except SoftTimeLimitExceeded:
        # Out of time before any file was opened (a starved process while its model
        # loads): nothing is stuck, so this process goes on and the batch waits.
        log.warning("batch %s: time limit reached before scoring began", batch_id)
        return _deliver_again(batch_id, "out of time before scoring")
    if isinstance(taken, str):
        return taken
    return _score_work(settings.database_url, *taken)


def _take(settings, batch_id: int) -> tuple[BatchWork, Predictor] | str:
    """The batch's work and a ready predictor, or why this delivery leaves it."""
    from worker import warmup

    with session_scope(settings.database_url) as session:
        version = version_of_batch(session, batch_id)
    if version is None:
        return "skipped"
    predictor = warmup.ready(settings, version.load_args, wait=0)
    if predictor is None:
        # Waiting a little keeps a loading process from re-sending the batch in a loop.
        wait = min(MODEL_WAIT_SECONDS, settings.batch_time_limit / 4)
        warmup.ready(settings, version.load_args, wait=wait)
        return _deliver_again(batch_id, f"model version {version.id} is loading")
    with session_scope(settings.database_url) as session:
        work = claim_work(session, settings.data_dir, batch_id)
    return "skipped" if work is None else (work, predictor)


def _deliver_again(batch_id: int, why: str) -> str:
    """Queue the batch once more, unclaimed. Its SQL send time stays that of its first
    send, so the reconciler still sees how long it has waited."""
    current_app.send_task(SCORE_BATCH, args=[batch_id])
    return f"left for later: {why}"


def _score_work(url: str, work: BatchWork, predictor: Predictor) -> str:
    from worker.scoring import POISON_ERROR, ResultRow, ScoringContext, score

    stats: dict = {"n": len(work.scans)}
    if work.queued_ms is not None:
        stats["queue_ms"] = work.queued_ms
    rows: list[ResultRow] = []
    refs, isolate, suspect = work.scans, work.isolate, work.suspect_scan_id
    if suspect is not None:  # the last attempt died on this file
        log.warning("batch %s: scan %s crashed the worker; leaving it out", work.batch_id, suspect)
        rows.append(ResultRow(suspect, work.job_id, work.version.id, error=POISON_ERROR))
        refs = [r for r in refs if r.scan_id != suspect]
    if refs:
        lung_share = work.version.modality in SHARE_MODALITIES
        ctx = ScoringContext(predictor, work.version.threshold, work.job_id, work.version.id,
                             work.skip_out_of_distribution, lung_share)  # fmt: skip
        if not isolate:
            try:
                scored, timings = score(refs, ctx, work.batch_id, work.next_batch)
                rows += scored
                stats |= timings
            except SoftTimeLimitExceeded:
                raise
            except Exception:
                log.exception("batch %s failed whole; scoring its files one by one", work.batch_id)
                isolate = True
        if isolate:
            rows += _score_isolated(url, work.batch_id, refs, ctx)
    t0 = time.perf_counter()
    with session_scope(url) as session:
        # Rows scored one by one are already stored; the unique scan key skips them here.
        store_results(session, [row.values() for row in rows])
        stats["write_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        set_probing(session, work.batch_id, None)
        finish_batch(session, work.batch_id, stats)
        refresh_job(session, work.job_id)
    return f"scored {len(rows)}"


def _score_isolated(url, batch_id, refs, ctx) -> list:
    from worker.scoring import score_one_by_one

    def before_each(ref) -> None:
        with session_scope(url) as session:
            set_probing(session, batch_id, ref.scan_id)

    def after_each(row) -> None:
        with session_scope(url) as session:
            store_results(session, [row.values()])

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
