"""Studies and their instances as received, and the state a study moves through:
receiving (instances arriving) -> screening (its jobs made once it settled) ->
screened (verdict stored), or not_screened when nothing in it is routable. Instances
that arrive after a study settled are screened by a follow-up job of the same study.

Moves are conditional updates, so two receivers, two sweeps or a redelivered task
cannot make two jobs of the same instances."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import FINAL_STATUSES, Job, Scan, Study, StudyInstance, StudyJob, utcnow

if TYPE_CHECKING:
    from models.readers.dicom import DicomTags


@dataclass(frozen=True)
class Origin:
    """Who sent an instance and whose it is."""

    owner: str
    source: str  # dicom:<AE> | stow | pull:<name>
    peer_id: int | None = None
    results_to_peer_id: int | None = None


@dataclass(frozen=True)
class RecordedInstance:
    study_id: int
    instance_id: int
    sop_instance_uid: str
    sop_class_uid: str | None
    route: str | None
    reason: str | None
    new_study: bool
    duplicate: bool  # the same bytes were already recorded under this SOP instance


def _fit(column, value: str | None) -> str | None:
    """A header text cut to its column's length (a header may say more than the
    standard allows; PostgreSQL refuses what SQLite would keep)."""
    return value[: column.type.length] if value else None


def _study_for(session: Session, header, origin: Origin) -> tuple[Study, bool]:
    query = select(Study).where(Study.owner == origin.owner, Study.study_uid == header.study_uid)
    study = session.scalar(query)
    if study is not None:
        return study, False
    try:
        with session.begin_nested():  # another receiver may create it at the same time
            study = Study(
                study_uid=header.study_uid,
                owner=origin.owner,
                peer_id=origin.peer_id,
                results_to_peer_id=origin.results_to_peer_id,
                source=origin.source[:80],
                patient_id=_fit(Study.patient_id, header.patient_id),
                accession=_fit(Study.accession, header.accession),
                study_date=_fit(Study.study_date, header.study_date),
                status="receiving",
                instances=0,
                not_screened=0,
                flagged=False,
                failed=0,
            )
            session.add(study)
            session.flush()
        return study, True
    except IntegrityError:
        return session.scalars(query).one(), False


def record_instance(
    session: Session, header: DicomTags, where, digest: str, rel: str, size: int, origin: Origin
) -> RecordedInstance:
    """Add (or replace, when its content changed) one instance in its study. An
    instance sent again with other content (same SOP Instance UID) is screened again by
    a follow-up job; its earlier job keeps its results, which no longer count in the
    study verdict (`counted_scan`)."""
    study, new_study = _study_for(session, header, origin)
    now = utcnow()
    instance = session.scalar(
        select(StudyInstance).where(
            StudyInstance.study_id == study.id,
            StudyInstance.sop_instance_uid == header.sop_instance_uid,
        )
    )
    duplicate = instance is not None and instance.sha256 == digest
    if instance is None:
        instance = StudyInstance(study_id=study.id, sop_instance_uid=header.sop_instance_uid)
        session.add(instance)
    if not duplicate:
        instance.series_uid = _fit(StudyInstance.series_uid, header.series_uid)
        instance.sop_class_uid = _fit(StudyInstance.sop_class_uid, header.sop_class_uid)
        instance.modality = _fit(StudyInstance.modality, header.modality)
        instance.route = where.modality
        instance.reason = _fit(StudyInstance.reason, where.reason)
        instance.sha256, instance.stored_path, instance.size_bytes = digest, rel, size
        instance.received_at = now
        # Changed content is screened again, by a follow-up job.
        instance.job_id = instance.first_position = instance.frames = None
        session.flush()
        _recount(session, study, header.modality)
        if origin.results_to_peer_id and study.results_to_peer_id is None:
            study.results_to_peer_id = origin.results_to_peer_id
        study.last_received_at = now
        if study.status == "not_screened" and where.modality:
            study.status = "receiving"
    session.flush()
    return RecordedInstance(
        study.id,
        instance.id,
        header.sop_instance_uid,
        header.sop_class_uid,
        where.modality,
        where.reason,
        new_study,
        duplicate,
    )


def _recount(session: Session, study: Study, modality: str | None) -> None:
    total, unrouted = session.execute(
        select(
            func.count(StudyInstance.id),
            func.count(StudyInstance.id).filter(StudyInstance.route.is_(None)),
        ).where(StudyInstance.study_id == study.id)
    ).one()
    study.instances, study.not_screened = total, unrouted
    if modality:
        known = set(filter(None, (study.modalities or "").split(",")))
        if modality not in known and len(",".join(known | {modality})) <= 64:
            study.modalities = ",".join(sorted(known | {modality}))


def _unclaimed(*where):
    """Conditions for a study's routable instances that no job holds yet (what the next
    sweep screens)."""
    return (StudyInstance.route.is_not(None), StudyInstance.job_id.is_(None), *where)


def settled_studies(session: Session, cutoff: datetime) -> list[int]:
    """Studies with routable instances not yet in a job and nothing new since `cutoff`."""
    pending = exists().where(*_unclaimed(StudyInstance.study_id == Study.id))
    return list(
        session.scalars(
            select(Study.id).where(Study.last_received_at < cutoff, pending).order_by(Study.id)
        )
    )


def mark_unscreenable(session: Session, cutoff: datetime) -> list[int]:
    """Settled studies still `receiving` with nothing routable in them -> not_screened."""
    routable = exists().where(StudyInstance.study_id == Study.id, StudyInstance.route.is_not(None))
    ids = list(
        session.scalars(
            select(Study.id).where(
                Study.status == "receiving", Study.last_received_at < cutoff, ~routable
            )
        )
    )
    if ids:
        session.execute(
            update(Study)
            .where(Study.id.in_(ids), Study.status == "receiving")
            .values(status="not_screened", settled_at=utcnow())
        )
    return ids


def claim_pending(session: Session, study_id: int, route: str, job_id: str) -> list[StudyInstance]:
    """Give the study's routable instances of `route` that no job has yet to `job_id`
    (a conditional update: a concurrent sweep gets none of them), in series order."""
    ids = list(
        session.scalars(
            select(StudyInstance.id).where(
                *_unclaimed(StudyInstance.study_id == study_id, StudyInstance.route == route)
            )
        )
    )
    if ids:
        session.execute(
            update(StudyInstance)
            .where(StudyInstance.id.in_(ids), StudyInstance.job_id.is_(None))
            .values(job_id=job_id)
        )
    session.flush()
    return list(
        session.scalars(
            select(StudyInstance)
            .where(StudyInstance.study_id == study_id, StudyInstance.job_id == job_id)
            .order_by(StudyInstance.series_uid, StudyInstance.id)
        )
    )


def pending_routes(session: Session, study_id: int) -> list[str]:
    return sorted(
        set(
            session.scalars(
                select(StudyInstance.route).where(*_unclaimed(StudyInstance.study_id == study_id))
            )
        )
    )


def add_study_job(session: Session, study_id: int, job_id: str, modality: str) -> None:
    session.add(StudyJob(study_id=study_id, job_id=job_id, modality=modality))
    session.execute(
        update(Study).where(Study.id == study_id).values(status="screening", settled_at=utcnow())
    )


def counted_scan(study_id: int):
    """An SQL condition on Scan: the scan shows an instance of the study as it stands
    now, i.e. it lies in the span [first_position, first_position + frames) of an
    instance whose current job is the scan's job. An instance sent again with other
    content points at its new job, so the scans of its earlier content, and their
    results, stay on the earlier job for the record but no longer count in the
    study's verdict (pacs.verdict) or results (pacs.dispatch)."""
    return exists().where(
        StudyInstance.study_id == study_id,
        StudyInstance.job_id == Scan.job_id,
        StudyInstance.first_position <= Scan.position,
        Scan.position < StudyInstance.first_position + StudyInstance.frames,
    )


def place_scans(session: Session, job_id: str, spans: dict[int, tuple[int, int]]) -> None:
    """Record where each instance's scans lie in `job_id` ({instance id: (first
    position, count)}), for the instances that are still the job's: one sent again
    meanwhile (so no longer claimed) keeps no span in a job that shows its old content."""
    for instance_id, (first, count) in spans.items():
        session.execute(
            update(StudyInstance)
            .where(StudyInstance.id == instance_id, StudyInstance.job_id == job_id)
            .values(first_position=first, frames=count)
        )


def study_jobs(session: Session, study_id: int) -> list[Job]:
    return list(
        session.scalars(
            select(Job)
            .join(StudyJob, StudyJob.job_id == Job.id)
            .where(StudyJob.study_id == study_id)
            .order_by(Job.created_at)
        )
    )


def release_unfilled(session: Session) -> int:
    """Instances claimed by a job that ended before their scans were written into it
    (its settling process died, and the reconciler failed the job as a stalled upload)
    are given back, so the next sweep screens them in a new job instead of never."""
    ended = select(Job.id).where(Job.status.in_(FINAL_STATUSES))
    return session.execute(
        update(StudyInstance)
        .where(
            StudyInstance.job_id.in_(ended),
            StudyInstance.first_position.is_(None),
            StudyInstance.route.is_not(None),
        )
        .values(job_id=None)
    ).rowcount


def studies_due_a_verdict(session: Session) -> list[int]:
    """Studies being screened whose every job has ended."""
    open_job = exists().where(
        StudyJob.study_id == Study.id,
        StudyJob.job_id == Job.id,
        Job.status.not_in(FINAL_STATUSES),
    )
    pending = exists().where(*_unclaimed(StudyInstance.study_id == Study.id))
    return list(
        session.scalars(select(Study.id).where(Study.status == "screening", ~open_job, ~pending))
    )


def store_verdict(session: Session, study_id: int, verdict: dict) -> bool:
    """screening -> screened with the verdict; False if the study moved meanwhile (a
    follow-up job opened)."""
    changed = session.execute(
        update(Study)
        .where(Study.id == study_id, Study.status == "screening")
        .values(
            status="screened",
            score=verdict.get("score"),
            label=verdict.get("label"),
            flagged=bool(verdict.get("flagged")),
            failed=int(verdict.get("failed") or 0),
            verdict=verdict,
            verdict_at=utcnow(),
        )
    ).rowcount
    return bool(changed)


WORKLIST_FILTERS = ("positive", "flagged", "failed", "unreviewed")
WORKLIST_SORTS = ("score", "received")


def worklist(
    session: Session,
    owner: str | None,
    sort: str = "score",
    filters: tuple[str, ...] = (),
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Study], int]:
    """Studies (of `owner`, or everyone's for None) by score, highest first, or newest
    first; `filters` keep only the positive ones (label at the threshold), the flagged
    (out of distribution), those with images that failed, or those no image of which
    has a review. Returns (page, total matching)."""
    from db.models import Review, Scan

    query = select(Study)
    if owner is not None:
        query = query.where(Study.owner == owner)
    if "positive" in filters:
        query = query.where(Study.label == "covid")
    if "flagged" in filters:
        query = query.where(Study.flagged.is_(True))
    if "failed" in filters:
        failed_job = exists().where(
            StudyJob.study_id == Study.id, StudyJob.job_id == Job.id, Job.status == "failed"
        )
        query = query.where((Study.failed > 0) | failed_job)
    if "unreviewed" in filters:
        reviewed = exists().where(
            StudyJob.study_id == Study.id,
            Scan.job_id == StudyJob.job_id,
            Review.scan_id == Scan.id,
        )
        query = query.where(~reviewed)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    if sort == "score":
        order = (Study.score.desc().nulls_last(), Study.last_received_at.desc())
    else:
        order = (Study.last_received_at.desc(),)
    rows = session.scalars(query.order_by(*order, Study.id.desc()).limit(limit).offset(offset))
    return list(rows), total or 0


def instance_counts(session: Session, study_id: int) -> list[dict]:
    """How many instances went where: per route, and per reason for the rest."""
    rows = session.execute(
        select(StudyInstance.route, StudyInstance.reason, func.count(StudyInstance.id))
        .where(StudyInstance.study_id == study_id)
        .group_by(StudyInstance.route, StudyInstance.reason)
    ).all()
    return [{"route": r, "reason": why, "instances": n} for r, why, n in rows]
