"""Retraining schedules, shared by the JSON API and the schedules page: check every
field, write the row, then mirror it into beat's entries (worker.beat). The row is
committed first; if Redis is down the reconciler syncs the entry later."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from db.accounts import audit
from db.models import Schedule, ScheduleRun, utcnow
from models.training_options import OPTIONS, as_fields
from web.access import owner_name, require_admin
from web.datasets import DatasetError, resolve_server_folder
from web.extensions import get_celery
from web.http import ApiError, boolean_field, bounded_number, db_session, settings
from web.serialize import iso
from web.training import parse_training_request
from worker.beat import BadSchedule, celery_schedule, sync_schedule

log = logging.getLogger(__name__)
# What a schedule's training run takes: the modality and every public training option.
TRAINING_FIELDS = ("modality", *(o.name for o in OPTIONS.values() if o.public))


def _text(values: Mapping, name: str) -> str:
    raw = values.get(name)
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw).strip()


def parse_schedule(values: Mapping, current: Schedule | None = None) -> dict:
    """Column values from form fields or JSON; on edit, absent fields keep their value."""
    merged = dict(_as_form(current)) if current else {}
    merged.update({k: _text(values, k) for k in values})
    form = {k: _text(merged, k) for k in merged}
    modality, config, _activate = parse_training_request(
        {k: form.get(k, "") for k in TRAINING_FIELDS}
    )
    name = form.get("name") or f"{modality} retraining"
    if len(name) > 128:
        raise ApiError(400, "bad_name", "name must be at most 128 characters")
    cron = form.get("cron") or None
    interval = bounded_number(form, "interval_seconds", int, 0, 0, 366 * 86400) or None
    try:
        celery_schedule(cron, interval)
    except BadSchedule as exc:
        raise ApiError(400, "bad_schedule", str(exc)) from None
    base = form.get("base_data_path") or None
    if base:
        cfg = settings()
        try:
            base = str(resolve_server_folder(base, [cfg.datasets_dir, *cfg.dataset_roots]))
        except DatasetError as exc:
            raise ApiError(400, "bad_base_data_path", str(exc)) from None
    return {
        "name": name,
        "modality": modality,
        "cron": cron,
        "interval_seconds": interval,
        "config": config,
        "base_data_path": base,
        "min_new_labels": bounded_number(form, "min_new_labels", int, 0, 0, 10**7),
        "margin": bounded_number(form, "margin", float, 0.0, 0.0, 1.0),
        "enabled": boolean_field(form, "enabled") if "enabled" in form else True,
    }


def _as_form(s: Schedule) -> dict:
    """A stored schedule as the fields that made it (so an edit can change one)."""
    out = {k: v for k, v in as_fields(s.config or {}).items() if k in TRAINING_FIELDS}
    out |= {
        "modality": s.modality,
        "name": s.name,
        "cron": s.cron or "",
        "interval_seconds": s.interval_seconds or "",
        "base_data_path": s.base_data_path or "",
        "min_new_labels": s.min_new_labels,
        "margin": s.margin,
        "enabled": s.enabled,
    }
    return out


def create_schedule(values: Mapping) -> dict:
    require_admin()
    fields = parse_schedule(values)
    with db_session() as session:
        row = Schedule(**fields, created_at=utcnow(), updated_at=utcnow())
        session.add(row)
        session.flush()
        body = schedule_json(row)
        audit(session, owner_name(), "create_schedule", f"schedule:{row.id}", fields)
    _sync(body["id"])
    return body


def update_schedule(schedule_id: int, values: Mapping) -> dict:
    with db_session() as session:
        row = get_schedule(session, schedule_id)
        fields = parse_schedule(values, current=row)
        for key, value in fields.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        session.flush()
        body = schedule_json(row)
        audit(session, owner_name(), "edit_schedule", f"schedule:{schedule_id}", fields)
    _sync(schedule_id)
    return body


def delete_schedule(schedule_id: int) -> None:
    with db_session() as session:
        session.delete(get_schedule(session, schedule_id))
        audit(session, owner_name(), "delete_schedule", f"schedule:{schedule_id}")
    _sync(schedule_id)


def get_schedule(session, schedule_id: int) -> Schedule:
    """Schedules are the admins' (they train and promote models for everyone)."""
    require_admin()
    row = session.get(Schedule, schedule_id)
    if row is None:
        raise ApiError(404, "schedule_not_found", f"no schedule {schedule_id}")
    return row


def _sync(schedule_id: int) -> None:
    try:
        with db_session() as session:
            sync_schedule(get_celery(), schedule_id, session.get(Schedule, schedule_id))
    except Exception:  # Redis down: the reconciler syncs from SQL within a minute
        log.exception("could not sync schedule %s to beat; the reconciler will", schedule_id)


def schedule_json(s: Schedule) -> dict:
    return {
        "id": s.id,
        "name": s.name,
        "modality": s.modality,
        "cron": s.cron,
        "interval_seconds": s.interval_seconds,
        "config": s.config,
        "base_data_path": s.base_data_path,
        "min_new_labels": s.min_new_labels,
        "margin": s.margin,
        "enabled": s.enabled,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
        "last_fired_at": iso(s.last_fired_at),
        "links": {
            "self": f"/api/v1/schedules/{s.id}",
            "runs": f"/api/v1/schedules/{s.id}/runs",
            "page": f"/schedules/{s.id}",
        },  # fmt: skip
    }


def run_json(r: ScheduleRun) -> dict:
    return {
        "id": r.id,
        "schedule": r.schedule_id,
        "fired_at": iso(r.fired_at),
        "status": r.status,
        "reason": r.reason,
        "new_labels": r.new_labels,
        "training_job": r.training_job_id,
        "champion_version": r.champion_version_id,
        "challenger_version": r.challenger_version_id,
        "report": r.report,
    }
