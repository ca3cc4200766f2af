"""Job state, moved only by conditional updates (expected status -> new status), so two
workers, a redelivered task and a cancel request can race without corrupting a job.
Counters are recomputed from the result table rather than incremented, which makes
every write idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import FINAL_STATUSES, Batch, Job, ModelVersion, Result, Scan, utcnow
from models.study_aggregate import summarise


@dataclass
class IncomingScan:
    """A file accepted at upload: stored (sha256/path) or rejected with `error`."""

    filename: str
    sha256: str | None = None
    stored_path: str | None = None
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    # DICOM: the series (or multi-frame file) it belongs to and its slice/frame number,
    # and a warning found at upload (e.g. the file says CT, the job is for X-rays).
    series: str | None = None
    frame: int | None = None
    note: str | None = None


def create_inference_job(
    session: Session,
    modality: str,
    model_version_id: int,
    scans: list[IncomingScan],
    batch_size: int,
    owner: str | None = None,
    options: dict | None = None,
) -> tuple[Job, list[int]]:
    """A whole job in one transaction (the upload path streams instead: open, add,
    close). Returns the job and the ids of the batches to enqueue."""
    job = open_inference_job(session, modality, model_version_id, owner, options)
    batch_ids = add_scans(session, job.id, list(enumerate(scans)), batch_size, first_seq=0)
    return close_upload(session, job.id), batch_ids


def open_inference_job(
    session: Session,
    modality: str,
    model_version_id: int,
    owner: str | None = None,
    options: dict | None = None,
) -> Job:
    """A job whose files are still arriving ("receiving"): workers score its batches as
    they are queued, but it cannot finish before `close_upload`."""
    job = Job(
        kind="inference",
        modality=modality,
        model_version_id=model_version_id,
        owner=owner,
        options=options or {},
        status="receiving",
        total=0,
        received_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def add_scans(
    session: Session,
    job_id: str,
    scans: list[tuple[int, IncomingScan]],
    batch_size: int,
    first_seq: int,
) -> list[int]:
    """Insert (upload position, scan) pairs: usable scans in new batches of
    `batch_size` (numbered from `first_seq`), files rejected at upload with their failed
    result at once, so every file of a job ends with exactly one result. Returns the
    new batches' ids, to enqueue."""
    good = [item for _pos, item in scans if item.error is None]
    batches = [
        Batch(job_id=job_id, seq=first_seq + i, size=len(good[start : start + batch_size]))
        for i, start in enumerate(range(0, len(good), batch_size))
    ]
    session.add_all(batches)
    session.flush()
    # One multi-row INSERT for the scans (and one for upload-time failures) instead of
    # an ORM object each: the upload waits for this.
    rows, good_index = [], 0
    for position, item in scans:
        batch_id = None
        if item.error is None:
            batch_id = batches[good_index // batch_size].id
            good_index += 1
        rows.append({
            "job_id": job_id, "batch_id": batch_id, "position": position,
            "filename": item.filename[:1024], "sha256": item.sha256,
            "stored_path": item.stored_path, "size_bytes": item.size_bytes,
            "width": item.width, "height": item.height, "series": item.series,
            "frame": item.frame, "note": item.note,
        })  # fmt: skip
    if rows:
        ids = session.scalars(insert(Scan).returning(Scan.id, sort_by_parameter_order=True), rows)
        failed = [
            {"scan_id": scan_id, "job_id": job_id, "error": item.error}
            for scan_id, (_pos, item) in zip(ids.all(), scans, strict=True)
            if item.error is not None
        ]
        store_results(session, failed)
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(total=Job.total + len(scans), received_at=utcnow())
    )
    return [b.id for b in batches]


def close_upload(session: Session, job_id: str) -> Job | None:
    """receiving -> queued, or running if a batch already started: from now on the
    last result finishes the job (and it may already have it)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "receiving")
        .values(status=case((Job.started_at.is_(None), "queued"), else_="running"))
    )
    return refresh_job(session, job_id)


def fail_stalled_uploads(session: Session, silent_since: datetime) -> list[str]:
    """Abort jobs still `receiving` whose upload has added nothing since
    `silent_since`: the web process that held the request died, so nothing will ever
    close them. Their scored results stay."""
    ids = list(session.scalars(
        select(Job.id).where(Job.status == "receiving", Job.received_at < silent_since)
    ))  # fmt: skip
    for job_id in ids:
        abort_upload(session, job_id, "the upload stopped arriving (the web process or the "
                     "client went away); the files that arrived were kept")  # fmt: skip
    return ids


def abort_upload(session: Session, job_id: str, error: str) -> None:
    """receiving -> failed, for an upload that broke off or was refused part-way; its
    batches not yet scored are skipped. Results already stored stay visible."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "receiving")
        .values(status="failed", finished_at=utcnow(), error=error[:2000])
    )
    _cancel_open_batches(session, job_id)


def upload_cancelled(session: Session, job_id: str) -> bool:
    """Whether a job whose files are still arriving was cancelled meanwhile."""
    return session.scalar(select(Job.status).where(Job.id == job_id)) == "cancelled"


def _cancel_open_batches(session: Session, job_id: str) -> None:
    """Batches of an ended job that no worker finished: workers skip them."""
    session.execute(
        update(Batch)
        .where(Batch.job_id == job_id, Batch.status.in_(("queued", "running")))
        .values(status="cancelled")
    )


def claim_batch(session: Session, batch_id: int) -> Batch | None:
    """queued|running -> running (running again on redelivery); None if the batch is
    finished or its job is cancelled or gone."""
    batch = session.get(Batch, batch_id)
    if batch is None or batch.status in ("done", "cancelled"):
        return None
    job = session.get(Job, batch.job_id)
    if job is None or job.status in FINAL_STATUSES:
        return None
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(("queued", "running")))
        .values(status="running", attempts=Batch.attempts + 1, started_at=utcnow())
    )
    session.execute(  # a job still receiving files keeps that status until closed
        update(Job)
        .where(Job.id == job.id, Job.status.in_(("queued", "receiving")), Job.started_at.is_(None))
        .values(status=case((Job.status == "queued", "running"), else_=Job.status),
                started_at=utcnow())
    )  # fmt: skip
    session.flush()
    session.refresh(batch)
    return batch


def pending_scans(session: Session, batch_id: int) -> list[Scan]:
    """Scans of a batch still without a result (a redelivered batch skips the rest)."""
    return list(
        session.scalars(
            select(Scan)
            .outerjoin(Result, Result.scan_id == Scan.id)
            .where(Scan.batch_id == batch_id, Result.id.is_(None))
            .order_by(Scan.position)
        )
    )


def next_queued_batch(session: Session, batch: Batch) -> tuple[int, list[Scan]] | None:
    """The job's next batch still waiting for a worker, with its scans: what a worker
    may decode ahead while it scores `batch`."""
    nxt = session.scalars(
        select(Batch)
        .where(Batch.job_id == batch.job_id, Batch.seq > batch.seq, Batch.status == "queued")
        .order_by(Batch.seq)
        .limit(1)
    ).first()
    return None if nxt is None else (nxt.id, pending_scans(session, nxt.id))


def store_results(session: Session, rows: list[dict]) -> None:
    """Bulk insert; a row for a scan that already has a result is silently skipped."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(Result).on_conflict_do_nothing(index_elements=["scan_id"])
    elif dialect == "sqlite":
        stmt = sqlite.insert(Result).on_conflict_do_nothing(index_elements=["scan_id"])
    else:  # pragma: no cover - other databases are not supported
        stmt = insert(Result)
    now = utcnow()
    session.execute(stmt, [{"created_at": now, **r} for r in rows])


def set_probing(session: Session, batch_id: int, scan_id: int | None) -> None:
    session.execute(update(Batch).where(Batch.id == batch_id).values(probing_scan_id=scan_id))


def finish_batch(session: Session, batch_id: int, stats: dict | None = None) -> None:
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == "running")
        .values(status="done", finished_at=utcnow(), stats=stats)
    )


def refresh_job(session: Session, job_id: str) -> Job | None:
    """Recount done/failed/flagged from results and close the job once every scan has one."""
    done, failed, flagged = session.execute(
        select(
            func.coalesce(func.sum(case((Result.error.is_(None), 1), else_=0)), 0),
            func.coalesce(func.sum(case((Result.error.is_not(None), 1), else_=0)), 0),
            func.coalesce(func.sum(case((Result.out_of_distribution.is_(True), 1), else_=0)), 0),
        ).where(Result.job_id == job_id)
    ).one()
    session.execute(
        update(Job).where(Job.id == job_id).values(done=done, failed=failed, flagged=flagged)
    )
    job = session.get(Job, job_id)
    if job is None:
        return None
    session.refresh(job)
    if job.status not in FINAL_STATUSES and done + failed >= job.total:
        final = "succeeded" if done > 0 or job.total == 0 else "failed"
        error = None if final == "succeeded" else "no file of this job could be scored"
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(("queued", "running")))
            .values(status=final, finished_at=utcnow(), error=error)
        )
        session.refresh(job)
    return job


def cancel_job(session: Session, job_id: str) -> bool:
    """queued|running|receiving -> cancelled; the batches still queued are skipped by
    workers. An upload still arriving stops storing files at its next batch
    (`upload_cancelled`)."""
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(("queued", "running", "receiving")))
        .values(status="cancelled", finished_at=utcnow())
    ).rowcount
    _cancel_open_batches(session, job_id)
    return bool(changed)


def mark_enqueued(session: Session, batch_ids: list[int]) -> None:
    if batch_ids:
        session.execute(update(Batch).where(Batch.id.in_(batch_ids)).values(enqueued_at=utcnow()))


def results_page(
    session: Session, job_id: str, limit: int, after_position: int = -1
) -> list[tuple[Scan, Result | None]]:
    """Scans in upload order with their result (None while still pending)."""
    rows = session.execute(
        select(Scan, Result)
        .outerjoin(Result, Result.scan_id == Scan.id)
        .where(Scan.job_id == job_id, Scan.position > after_position)
        .order_by(Scan.position)
        .limit(limit)
    ).all()
    return [(scan, result) for scan, result in rows]


def series_summary(session: Session, job_id: str) -> list[dict]:
    """Per DICOM series (or multi-frame file) of a job: its images, how many were
    scored, and its score by the same rule as a PACS study's verdict
    (models.study_aggregate.summarise: the measured aggregate over the slices inside
    the lungs and in distribution, or an abstention with the reason), beside its
    highest slice probability with that slice's scan id."""
    rows = session.execute(
        select(
            Scan.series,
            Scan.id.label("scan_id"),
            Result.probability,
            Result.label,
            Result.out_of_distribution,
            Result.error,
            ModelVersion.threshold,
            ModelVersion.id.label("version_id"),
        )
        .outerjoin(Result, Result.scan_id == Scan.id)
        .outerjoin(ModelVersion, ModelVersion.id == Result.model_version_id)
        .where(Scan.job_id == job_id, Scan.series.is_not(None))
        .order_by(Scan.series, Scan.position)
    ).all()
    by_series: dict[str, list] = {}
    for row in rows:
        by_series.setdefault(row.series, []).append(row)
    return [{"series": series, **summarise(group)} for series, group in by_series.items()]
