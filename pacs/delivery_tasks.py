"""Celery tasks that send results back to the PACS, on their own queue (dicom_out) so a
slow or unreachable PACS never holds up scoring, and with no TensorFlow in them (heat
maps are made by the inference workers' explain task).

At-least-once, like every ScanQ task (late acks, worker.celery_app): a task delivered
twice, or a retry after an answer that was lost, sends the same objects with the same
SOP Instance UIDs again, which the PACS stores once. A failed attempt is retried with
exponential backoff (SCANQ_DELIVERY_BACKOFF doubling, at most ten minutes) up to
SCANQ_DELIVERY_RETRIES times; then the delivery is failed with the reason, and stays
in SQL with everything needed to send it again (POST /api/v1/studies/<id>/send)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import current_app, shared_task
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError, OperationalError

from db.accounts import audit
from db.deliveries import (
    claim_stale,
    current,
    deliveries_of_study,
    record_failure,
    record_sent,
    reset_for_resend,
)
from db.models import DicomDelivery, Study, StudyInstance, StudyJob, utcnow
from db.session import session_scope
from scanq.settings import get_settings
from worker.celery_app import DELIVER_STUDY, DELIVERY_SWEEP, EXPLAIN_SCAN, SEND_DELIVERY

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 600
HEATMAP_POLL_S = 2.0


def queue_send(delivery_id: int, generation: int) -> None:
    current_app.send_task(SEND_DELIVERY, args=[delivery_id, generation])


# IntegrityError: the settle hook and the sweep opened the same study's deliveries at
# once; the retry finds them made.
@shared_task(name=DELIVER_STUDY, autoretry_for=(OperationalError, IntegrityError),
             retry_backoff=True, max_retries=10)  # fmt: skip
def deliver_study(study_id: int) -> dict:
    """A screened study's results, one delivery per ended job that has none yet. When
    a follow-up job changed the verdict, the study's earlier deliveries are sent again:
    their SR keeps its UID, so the PACS's copy is replaced by one with today's verdict.
    An earlier job none of whose instances it still shows (all were sent again with
    other content, db.studies.counted_scan) has nothing left to report and is not."""
    from pacs.dispatch import NoDestination, open_deliveries

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        try:
            made = open_deliveries(session, study_id)
        except NoDestination as exc:
            log.info("study %s: results not sent: %s", study_id, exc)
            return {"study": study_id, "deliveries": [], "reason": str(exc)}
        if made:
            new = {delivery_id for delivery_id, _g in made}
            for row in deliveries_of_study(session, study_id):
                if row.id not in new and row.status == "sent" and _still_shows(session, row):
                    made.append(reset_for_resend(row, None))
    for delivery_id, generation in made:
        queue_send(delivery_id, generation)
    return {"study": study_id, "deliveries": [d for d, _g in made]}


def _still_shows(session, row: DicomDelivery) -> bool:
    """Whether the delivery's job still holds an instance of its study."""
    held = select(StudyInstance.id).where(
        StudyInstance.study_id == row.study_id, StudyInstance.job_id == row.job_id
    )
    return session.scalar(held.limit(1)) is not None


def _backoff(attempts: int) -> int:
    settings = get_settings()
    return get_exponential_backoff_interval(
        max(1, settings.delivery_backoff), max(0, attempts - 1), MAX_BACKOFF_S
    )


@shared_task(bind=True, name=SEND_DELIVERY, max_retries=None,
             autoretry_for=(OperationalError,), retry_backoff=True)  # fmt: skip
def send_delivery(self, delivery_id: int, generation: int, heatmaps_since: float | None = None):
    """One attempt at a delivery (of this generation; a newer resend supersedes it).
    Its heat maps are asked for first, and waited for up to SCANQ_RESULTS_HEATMAP_WAIT
    seconds; whatever is missing then goes without."""
    from pacs.dispatch import NoDestination, build_objects, collect, destination_of
    from pacs.transport import DeliveryError, send

    settings = get_settings()
    again = {"delivery_id": delivery_id, "generation": generation}
    with session_scope(settings.database_url) as session:
        row = current(session, delivery_id, generation)
        if row is None:
            return "superseded or done"
        contents = collect(settings, session, row)
        missing = [h for h in contents.heatmaps if not h.path.exists()]
        if missing and heatmaps_since is None:
            for heat in missing:  # the inference workers make them (worker.explain)
                current_app.send_task(EXPLAIN_SCAN, args=[heat.scan_id])
            heatmaps_since = time.time()
        wait = bool(missing) and time.time() - heatmaps_since < settings.results_heatmap_wait
        if not wait:
            user = row.requested_by or session.get(Study, row.study_id).owner
            destination, objects, error, logged = None, [], None, None
            try:
                destination = destination_of(session, row, settings.dicom_ae)
                objects = build_objects(contents)
            except NoDestination as exc:
                error = str(exc)
            except Exception as exc:  # the same data would fail the same way: no retry
                # Logged by type only: the message may quote a header value (a patient's
                # name); the owner reads it in the delivery's reason.
                logged = f"result objects not built ({type(exc).__name__})"
                error = f"cannot build the result objects: {type(exc).__name__}: {exc}"
    if wait:
        raise self.retry(
            countdown=HEATMAP_POLL_S, args=(), kwargs={**again, "heatmaps_since": heatmaps_since}
        )
    retryable = error is None
    if error is None:
        try:
            send(objects, destination)
        except DeliveryError as exc:
            error = str(exc)
    with session_scope(settings.database_url) as session:
        row = current(session, delivery_id, generation)
        if row is None:
            return "superseded"
        if error is None:
            skipped = sum(1 for h in contents.heatmaps if not h.path.exists())
            note = f"{skipped} heat maps could not be made in time" if skipped else None
            record_sent(row, [ds.SOPInstanceUID for ds in objects], note)
            outcome = "sent"
        else:
            final = not retryable or row.attempts + 1 > settings.delivery_retries
            record_failure(row, error, final)
            outcome = "failed" if final else "retrying"
        study_id, attempts = row.study_id, row.attempts
        detail = {"delivery": row.id, "job": row.job_id, "destination": row.destination,
                  "outcome": outcome, "objects": len(objects), "attempt": attempts}  # fmt: skip
        if error:
            detail["reason"] = error
        audit(session, user, "dicom_send", f"study:{study_id}", detail)
    reason = logged or error  # transport and destination reasons quote no header value
    log.info("delivery %s (study %s): %s after %d attempts%s", delivery_id, study_id, outcome,
             attempts, f": {reason}" if reason else "")  # fmt: skip
    if outcome == "retrying":
        later = {**again, "heatmaps_since": heatmaps_since}
        raise self.retry(countdown=_backoff(attempts), args=(), kwargs=later)
    return outcome


@shared_task(name=DELIVERY_SWEEP, autoretry_for=(OperationalError,), max_retries=3)
def delivery_sweep() -> dict:
    """Beat's backstop for messages that were never sent or were lost: screened studies
    with a results destination whose jobs have no delivery yet, and pending deliveries
    nobody has touched for longer than any retry waits."""
    settings = get_settings()
    undelivered = exists().where(
        DicomDelivery.study_id == StudyJob.study_id, DicomDelivery.job_id == StudyJob.job_id
    )
    with session_scope(settings.database_url) as session:
        studies = list(
            session.scalars(
                select(Study.id)
                .join(StudyJob, StudyJob.study_id == Study.id)
                .where(Study.status == "screened", ~undelivered)
                .where(Study.results_to_peer_id.is_not(None) | Study.source.like("pull:%"))
                .distinct()
            )
        )
        cutoff = utcnow() - timedelta(seconds=2 * MAX_BACKOFF_S + settings.batch_time_limit)
        stale = claim_stale(session, cutoff)
    for study_id in studies:
        current_app.send_task(DELIVER_STUDY, args=[study_id])
    for delivery_id, generation in stale:
        queue_send(delivery_id, generation)
    return {"studies": studies, "stale": [d for d, _g in stale]}
