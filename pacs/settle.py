"""Studies that stopped growing become bulk jobs; finished jobs become a verdict.

Beat fires `sweep` every few seconds (worker.celery_app: SETTLE_STUDIES). A study is
settled once no instance arrived for SCANQ_STUDY_SETTLE seconds; its routable instances
that no job has yet (all of them the first time, the late ones afterwards) are claimed
by a new job per model, made through the same job tables, batches and queue as an
upload (db.jobs), so results, isolation, CSV export and job pages work as for uploads.
Each instance is decoded into scans here, one at a time (an instance that cannot be
decoded fails alone, as a file of an upload does), and every full batch is queued at
once. When all of a study's jobs have ended, its verdict (pacs.verdict) is stored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from db.accounts import audit
from db.jobs import IncomingScan, add_scans, close_upload, mark_enqueued, open_inference_job
from db.models import Study, StudyInstance, utcnow
from db.registry import active_version
from db.session import session_scope
from db.studies import (
    add_study_job,
    claim_pending,
    mark_unscreenable,
    pending_routes,
    place_scans,
    release_unfilled,
    settled_studies,
    store_verdict,
    studies_due_a_verdict,
)
from pacs.verdict import study_verdict
from scanq.settings import Settings
from worker.sending import send_committed

log = logging.getLogger(__name__)
SendTask = Callable[[str, list], None]


def sweep(settings: Settings, send_task: SendTask) -> dict:
    """One pass: settle what is stable, store the verdicts that are due."""
    cutoff = utcnow() - timedelta(seconds=settings.study_settle)
    with session_scope(settings.database_url) as session:
        release_unfilled(session)
        unscreenable = mark_unscreenable(session, cutoff)
        settled = settled_studies(session, cutoff)
    jobs = []
    for study_id in settled:
        jobs += screen_study(settings, study_id, send_task)
    with session_scope(settings.database_url) as session:
        due = studies_due_a_verdict(session)
    verdicts = [study_id for study_id in due if finish_study(settings, study_id, send_task)]
    return {"not_screened": unscreenable, "jobs": jobs, "verdicts": verdicts}


def screen_study(settings: Settings, study_id: int, send_task: SendTask) -> list[str]:
    """A job per model for the study's instances that no job has yet."""
    from worker.celery_app import SCORE_BATCH

    made = []
    with session_scope(settings.database_url) as session:
        routes = pending_routes(session, study_id)
    for modality in routes:
        with session_scope(settings.database_url) as session:
            study = session.get(Study, study_id)
            version = active_version(session, modality)
            if version is None:
                _no_model(session, study_id, modality)
                continue
            options = {"skip_out_of_distribution": False, "study_id": study_id}
            job = open_inference_job(session, modality, version.id, study.owner, options)
            claimed = claim_pending(session, study_id, modality, job.id)
            if not claimed:  # another sweep took them
                session.delete(job)
                continue
            add_study_job(session, study_id, job.id, modality)
            audit(
                session,
                study.owner,
                "study_job",
                f"job:{job.id}",
                {
                    "study": study_id,
                    "instances": len(claimed),
                    "modality": modality,
                    "model_version": version.id,
                    "source": study.source,
                },
            )
            job_id = job.id
            work = [(i.id, i.sop_instance_uid, i.stored_path) for i in claimed]
        log.info("study %s: job %s for %d %s instances", study_id, job_id, len(work), modality)
        _fill_job(
            settings,
            job_id,
            modality,
            work,
            lambda ids: _enqueue(settings, ids, send_task, SCORE_BATCH),
        )
        made.append(job_id)
    return made


def _no_model(session, study_id: int, modality: str) -> None:
    from sqlalchemy import update

    session.execute(
        update(StudyInstance)
        .where(
            StudyInstance.study_id == study_id,
            StudyInstance.route == modality,
            StudyInstance.job_id.is_(None),
        )
        .values(route=None, reason=f"no active {modality} model to screen it with")
    )


def _fill_job(settings: Settings, job_id: str, modality: str, work: list, enqueue) -> None:
    """Decode each claimed instance into scans, commit them a batch at a time (with
    where each instance's scans lie in the job), queue each batch, then close."""
    from web.ingest import Limits, ingest

    limits = Limits(
        settings.max_files_per_job, settings.max_archive_ratio, settings.max_upload_bytes
    )
    held: list[tuple[int, IncomingScan]] = []
    spans: dict[int, tuple[int, int]] = {}
    position, seq = 0, 0

    def write(final: bool) -> None:
        nonlocal held, seq
        good = sum(1 for _p, s in held if s.error is None)
        if not final and good < settings.batch_size:
            return
        with session_scope(settings.database_url) as session:
            batch_ids = add_scans(session, job_id, held, settings.batch_size, seq)
            place_scans(session, job_id, spans)
            if final:
                close_upload(session, job_id)
        seq += len(batch_ids)
        held, spans.clear()
        enqueue(batch_ids)

    for instance_id, sop_uid, stored_path in work:
        try:
            data = (settings.data_dir / stored_path).read_bytes()
            scans = ingest([(sop_uid, data)], settings.data_dir, limits, modality)
        except Exception as exc:  # this instance fails alone; the study goes on
            scans = [
                IncomingScan(
                    filename=sop_uid,
                    error=f"cannot read the instance: {type(exc).__name__}: {exc}"[:300],
                )
            ]
        data = None  # one instance in memory at a time
        spans[instance_id] = (position, len(scans))
        for scan in scans:
            held.append((position, scan))
            position += 1
        write(final=False)
    write(final=True)


def _enqueue(settings: Settings, batch_ids: list[int], send_task: SendTask, name: str) -> None:
    send_committed(settings.database_url, send_task, name, batch_ids, mark_enqueued)


def finish_study(settings: Settings, study_id: int, send_task: SendTask) -> bool:
    """Store the verdict of a study whose jobs have all ended, then let the results go
    back (worker.celery_app.DELIVER_STUDY, when the dispatcher is installed)."""
    with session_scope(settings.database_url) as session:
        verdict = study_verdict(session, study_id)
        if not store_verdict(session, study_id, verdict):
            return False
    log.info(
        "study %s screened: %d images, %d failed", study_id, verdict["images"], verdict["failed"]
    )
    from worker import celery_app

    deliver = getattr(celery_app, "DELIVER_STUDY", None)
    if deliver:
        try:
            send_task(deliver, [study_id])
        except Exception:
            log.exception("could not queue the results of study %s", study_id)
    return True
