"""Send the tasks of work already committed in SQL, and record which were sent.

Every producer (an upload's batches, a training request, a schedule's run, the
reconciler, a PACS study) writes its rows first and sends after the commit, so a task
never names a row that is not there yet. A send that fails (the broker is down) is
logged, not raised: the rows stay queued in SQL with no (or an old) sent time, and the
reconciler (worker.tasks.reconcile) sends them again. Delivery stays at-least-once;
tasks are idempotent against SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from db.jobs import mark_enqueued
from db.session import session_scope
from db.training_jobs import mark_sent
from worker.celery_app import SCORE_BATCH, TRAIN_MODEL

log = logging.getLogger(__name__)

# A Celery app's send_task(name, args), or anything called the same way.
SendTask = Callable[..., object]


def send_committed(
    database_url: str,
    send_task: SendTask,
    task: str,
    ids: Sequence,
    mark: Callable[[Session, list], None],
) -> bool:
    """Send `task` once per id (its only argument), then `mark` the ids sent in one
    transaction. False if the broker could not take them all."""
    sent: list = []
    try:
        for row_id in ids:
            send_task(task, [row_id])
            sent.append(row_id)
    except Exception:  # the broker is down: the reconciler sends the rest from SQL
        log.exception(
            "could not send %d %s tasks; they stay queued in SQL for the reconciler",
            len(ids) - len(sent),
            task,
        )
    if sent:
        with session_scope(database_url) as session:
            mark(session, sent)
    return len(sent) == len(ids)


def send_batches(database_url: str, send_task: SendTask, batch_ids: Sequence[int]) -> bool:
    """Score these committed batches (Batch.enqueued_at records the send)."""
    return send_committed(database_url, send_task, SCORE_BATCH, batch_ids, mark_enqueued)


def send_training(database_url: str, send_task: SendTask, job_ids: Sequence[str]) -> bool:
    """Start these committed training jobs (Job.sent_at records the send)."""
    return send_committed(database_url, send_task, TRAIN_MODEL, job_ids, mark_sent)
