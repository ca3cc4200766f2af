"""/api/v1/schedules: create, read, edit (PATCH; `enabled: false` pauses), delete, and
each schedule's runs with the gate's decisions. Bodies are JSON or form fields."""

from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select

from db.models import Schedule
from db.schedules import runs
from web.access import require_admin
from web.api import bp
from web.http import db_session
from web.schedules import (
    create_schedule,
    delete_schedule,
    get_schedule,
    run_json,
    schedule_json,
    update_schedule,
)


def _body():
    return request.get_json(silent=True) or request.form


@bp.get("/schedules")
def list_schedules():
    require_admin()
    with db_session() as session:
        rows = session.scalars(select(Schedule).order_by(Schedule.id)).all()
        return jsonify(items=[schedule_json(s) for s in rows])


@bp.post("/schedules")
def new_schedule():
    body = create_schedule(_body())
    return jsonify(body), 201, {"Location": body["links"]["self"]}


@bp.get("/schedules/<int:schedule_id>")
def show_schedule(schedule_id: int):
    with db_session() as session:
        return jsonify(schedule_json(get_schedule(session, schedule_id)))


@bp.patch("/schedules/<int:schedule_id>")
def edit_schedule(schedule_id: int):
    return jsonify(update_schedule(schedule_id, _body()))


@bp.delete("/schedules/<int:schedule_id>")
def remove_schedule(schedule_id: int):
    delete_schedule(schedule_id)
    return "", 204


@bp.get("/schedules/<int:schedule_id>/runs")
def schedule_runs(schedule_id: int):
    with db_session() as session:
        get_schedule(session, schedule_id)
        return jsonify(items=[run_json(r) for r in runs(session, schedule_id)])
