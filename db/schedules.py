"""Retraining schedules and their runs, in SQL. Firing is claimed by a conditional
update, so a slot fired twice (two beats for a moment, a redelivered message) starts
at most one run."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from db.models import Schedule, ScheduleRun, utcnow


def claim_firing(session: Session, schedule_id: int, min_gap_seconds: float) -> bool:
    """True for the first firing of an enabled schedule in `min_gap_seconds`."""
    now = utcnow()
    claimed = session.execute(
        update(Schedule)
        .where(
            Schedule.id == schedule_id,
            Schedule.enabled.is_(True),
            or_(
                Schedule.last_fired_at.is_(None),
                Schedule.last_fired_at < now - timedelta(seconds=min_gap_seconds),
            ),
        )
        .values(last_fired_at=now)
        # Not evaluated against loaded rows in Python: SQLite hands back naive times.
        .execution_options(synchronize_session=False)
    ).rowcount
    return bool(claimed)


def add_run(session: Session, schedule_id: int, status: str, **fields) -> ScheduleRun:
    run = ScheduleRun(schedule_id=schedule_id, status=status, fired_at=utcnow(), **fields)
    session.add(run)
    session.flush()
    return run


def finish_run(session: Session, run_id: int, status: str, reason: str, **fields) -> None:
    """training -> promoted|kept|failed, once."""
    session.execute(
        update(ScheduleRun)
        .where(ScheduleRun.id == run_id, ScheduleRun.status == "training")
        .values(status=status, reason=reason, **fields)
        .execution_options(synchronize_session=False)
    )


def runs(session: Session, schedule_id: int, limit: int = 100) -> list[ScheduleRun]:
    return list(
        session.scalars(
            select(ScheduleRun)
            .where(ScheduleRun.schedule_id == schedule_id)
            .order_by(ScheduleRun.fired_at.desc(), ScheduleRun.id.desc())
            .limit(limit)
        )
    )


def min_gap_seconds(schedule: Schedule) -> float:
    """Two firings closer than this are one slot fired twice: half an interval, or 30 s
    for cron (whose resolution is a minute)."""
    if schedule.interval_seconds:
        return max(schedule.interval_seconds / 2.0, 0.5)
    return 30.0


def touch(schedule: Schedule, when: datetime | None = None) -> None:
    schedule.updated_at = when or utcnow()


def fail_runs_of_jobs(session: Session, job_ids: list[str], reason: str) -> None:
    """Runs whose training job ended without reaching the gate."""
    if job_ids:
        session.execute(
            update(ScheduleRun)
            .where(ScheduleRun.training_job_id.in_(job_ids), ScheduleRun.status == "training")
            .values(status="failed", reason=reason)
            .execution_options(synchronize_session=False)
        )


def all_schedules(session: Session) -> list[Schedule]:
    return list(session.scalars(select(Schedule).order_by(Schedule.id)))
