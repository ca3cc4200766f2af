"""Training runs as job rows. A run's state moves only by conditional updates, like an
inference job's: queued -> running happens once (a re-sent message finds the job
running and does nothing), and a run that stops reporting is failed by the reconciler
instead of being started a second time. Progress (one entry per epoch) and a heartbeat
are written as the run advances, so the job page reads SQL, not the broker."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import Job, utcnow


def create_training_job(
    session: Session, modality: str, options: dict, total_epochs: int, owner: str | None = None
) -> Job:
    job = Job(
        kind="training",
        modality=modality,
        options=options,
        total=total_epochs,
        owner=owner,
        progress={"epochs": []},
    )
    session.add(job)
    session.flush()
    return job


def claim_training_job(session: Session, job_id: str) -> Job | None:
    """queued -> running, once. None when another delivery already took it, or it was
    cancelled before it started."""
    now = utcnow()
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.kind == "training", Job.status == "queued")
        .values(status="running", started_at=now, heartbeat_at=now)
    ).rowcount
    return session.get(Job, job_id) if claimed else None


def record_epoch(session: Session, job_id: str, epoch: int, logs: dict) -> str:
    """Append one epoch's figures while the run is running; returns the job's status
    so the caller can stop a cancelled run."""
    job = session.get(Job, job_id)
    if job is None:
        return "cancelled"
    epochs = [e for e in (job.progress or {}).get("epochs", []) if e["epoch"] != epoch]
    epochs.append({"epoch": epoch, **{k: round(float(v), 5) for k, v in logs.items()}})
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(
            progress={**(job.progress or {}), "epochs": epochs},
            done=min(epoch, job.total),
            heartbeat_at=utcnow(),
        )
    )
    return job.status


def heartbeat(session: Session, job_id: str) -> str | None:
    """Mark the run alive; returns its status (None if the job is gone)."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == "running").values(heartbeat_at=utcnow())
    )
    return session.scalar(select(Job.status).where(Job.id == job_id))


def set_stage(session: Session, job_id: str, stage: str) -> None:
    job = session.get(Job, job_id)
    if job is not None:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(progress={**(job.progress or {}), "stage": stage}, heartbeat_at=utcnow())
        )


def finish_training_job(
    session: Session, job_id: str, status: str, model_version_id: int | None = None,
    error: str | None = None,
) -> bool:  # fmt: skip
    """running -> succeeded|failed; False when the run was cancelled meanwhile."""
    values = {"status": status, "finished_at": utcnow(), "error": error}
    if model_version_id is not None:
        values["model_version_id"] = model_version_id
    return bool(
        session.execute(
            update(Job).where(Job.id == job_id, Job.status == "running").values(**values)
        ).rowcount
    )


def fail_stalled_training(session: Session, silent_since: datetime) -> list[str]:
    """Fail running training jobs whose worker has not reported since `silent_since`."""
    ids = list(
        session.scalars(
            select(Job.id).where(
                Job.kind == "training", Job.status == "running", Job.heartbeat_at < silent_since
            )
        )
    )
    for job_id in ids:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.heartbeat_at < silent_since)
            .values(
                status="failed",
                finished_at=utcnow(),
                error="the training worker stopped reporting (killed or lost); "
                "submit the run again",
            )
        )
    return ids


def mark_sent(session: Session, job_ids: list[str]) -> None:
    """Record that these training jobs' tasks were just sent."""
    if job_ids:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(sent_at=utcnow()))


def unsent_training_jobs(session: Session, sent_before: datetime) -> list[str]:
    """Queued training jobs last sent (or, never sent, created) before `sent_before`:
    their message may be lost. Sending again is harmless: a run is claimed once."""
    return list(
        session.scalars(
            select(Job.id).where(
                Job.kind == "training",
                Job.status == "queued",
                func.coalesce(Job.sent_at, Job.created_at) < sent_before,
            )
        )
    )
