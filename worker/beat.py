"""SQL schedules, fired by celery beat through celery-redbeat.

Schedules live in SQL; each enabled one is mirrored into a redbeat entry in Redis.
Beat runs with redbeat's scheduler, which reads its entries from Redis on every tick
(so a schedule created, edited or paused through the web is picked up without a
restart) and holds a lock in Redis, so of several beat processes exactly one fires
anything; another takes over when the holder dies and its lock lapses. The web syncs
an entry after every change; the reconciler re-creates lost ones (Redis restarted
without its data) and drops those whose row is gone.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab, schedule

from db.models import Schedule
from worker.celery_app import RUN_SCHEDULE

log = logging.getLogger(__name__)
PREFIX = "scanq-schedule-"


class BadSchedule(ValueError):
    """A cron expression or interval that cannot be used; the message says why."""


def celery_schedule(cron: str | None, interval_seconds: int | None):
    """A Celery schedule from a 5-field cron expression or an interval in seconds."""
    if bool(cron) == bool(interval_seconds):
        raise BadSchedule("give either cron (5 fields) or interval_seconds, not both")
    if interval_seconds:
        if interval_seconds < 1:
            raise BadSchedule("interval_seconds must be at least 1")
        return schedule(timedelta(seconds=interval_seconds))
    fields = cron.split()
    if len(fields) != 5:
        raise BadSchedule("cron must have 5 fields: minute hour day-of-month month day-of-week")
    try:
        return crontab(*fields)
    except (ValueError, TypeError) as exc:
        raise BadSchedule(f"bad cron expression {cron!r}: {exc}") from None


def _entry(app: Celery, row: Schedule):
    from redbeat import RedBeatSchedulerEntry

    # `rev` changes with every edit: an unchanged entry is left alone (re-saving an
    # entry restarts its interval), a changed one is replaced.
    return RedBeatSchedulerEntry(
        name=f"{PREFIX}{row.id}",
        task=RUN_SCHEDULE,
        schedule=celery_schedule(row.cron, row.interval_seconds),
        args=[row.id],
        kwargs={"rev": row.updated_at.isoformat()},
        app=app,
    )


def _existing(app: Celery, schedule_id: int):
    from redbeat import RedBeatSchedulerEntry

    key = RedBeatSchedulerEntry.generate_key(app, f"{PREFIX}{schedule_id}")
    try:
        return RedBeatSchedulerEntry.from_key(key, app=app)
    except KeyError:
        return None


def sync_schedule(app: Celery, schedule_id: int, row: Schedule | None) -> None:
    """Make Redis hold exactly what the row says: an entry if enabled, none otherwise."""
    from redbeat.schedulers import ensure_conf

    ensure_conf(app)
    existing = _existing(app, schedule_id)
    if row is None or not row.enabled:
        if existing is not None:
            existing.delete()
        return
    wanted = _entry(app, row)
    if existing is None or existing.kwargs != wanted.kwargs:
        if existing is not None:
            existing.delete()
        wanted.save()


def sync_all(app: Celery, rows: list[Schedule]) -> None:
    from redbeat.schedulers import ensure_conf, get_redis

    ensure_conf(app)
    for row in rows:
        sync_schedule(app, row.id, row)
    known = {f"{PREFIX}{row.id}" for row in rows}
    prefix = app.redbeat_conf.key_prefix + PREFIX
    for key in get_redis(app).scan_iter(match=prefix + "*"):
        name = (key.decode() if isinstance(key, bytes) else key)[len(app.redbeat_conf.key_prefix) :]
        if name not in known:
            sync_schedule(app, int(name[len(PREFIX) :]), None)
