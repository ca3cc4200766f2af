"""Pages of the reviewer loop: one result with its Grad-CAM picture and a label form,
and the retraining schedules with their runs. Routes on pages.bp; the forms post to
the same services as the JSON API."""

from __future__ import annotations

import io

from flask import abort, redirect, render_template, request, send_file, url_for
from PIL import Image
from sqlalchemy import select

from db.models import LABELS, MODALITIES, Schedule
from db.schedules import runs
from models.backbones import BACKBONES
from models.readers import ImageError, decode_grayscale
from web.auth import current_user
from web.http import ApiError, db_session
from web.pages import bp, stored_scan_path
from web.reviews import record_review, result_detail
from web.schedules import (
    create_schedule,
    delete_schedule,
    get_schedule,
    run_json,
    schedule_json,
    update_schedule,
)


@bp.get("/results/<int:scan_id>")
def result_page(scan_id: int, error: str | None = None, status: int = 200):
    with db_session() as session:
        try:
            detail = result_detail(session, scan_id)
        except ApiError:
            abort(404)
    return render_template("result.html", r=detail, labels=LABELS, error=error), status


@bp.post("/results/<int:scan_id>/review")
def review_form(scan_id: int):
    try:
        record_review(scan_id, request.form)
    except ApiError as exc:
        if exc.status == 404:
            abort(404)
        return result_page(scan_id, exc.message, exc.status)
    return redirect(url_for("pages.result_page", scan_id=scan_id), 303)


@bp.get("/scans/<int:scan_id>/image.png")
def scan_image(scan_id: int):
    """The stored image as grey PNG at its own size (what the model saw, before resizing)."""
    path = stored_scan_path(scan_id)
    try:
        gray = decode_grayscale(path)
    except (ImageError, OSError):
        abort(404)
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, "PNG")
    buf.seek(0)
    return send_file(buf, mimetype="image/png", max_age=86400)


def _schedules_page(error: str | None = None, status: int = 200, form=None):
    if not current_user().is_admin:
        abort(403)
    with db_session() as session:
        rows = session.scalars(select(Schedule).order_by(Schedule.id)).all()
        items = [(schedule_json(s), [run_json(r) for r in runs(session, s.id, 5)]) for s in rows]
    page = render_template("schedules.html", items=items, error=error, form=form or {},
                           backbones=list(BACKBONES), modalities=MODALITIES)  # fmt: skip
    return page, status


@bp.get("/schedules")
def schedules_page():
    return _schedules_page()


@bp.post("/schedules")
def schedule_create_form():
    try:
        body = create_schedule(request.form)
    except ApiError as exc:
        if exc.status == 403:
            abort(403)
        return _schedules_page(exc.message, exc.status, request.form)
    return redirect(url_for("pages.schedule_page", schedule_id=body["id"]), 303)


def _schedule_page(schedule_id: int, error: str | None = None, status: int = 200):
    with db_session() as session:
        try:
            row = get_schedule(session, schedule_id)
        except ApiError as exc:
            abort(exc.status)
        body = schedule_json(row)
        history = [run_json(r) for r in runs(session, schedule_id)]
    page = render_template("schedule.html", s=body, runs=history, error=error,
                           backbones=list(BACKBONES))  # fmt: skip
    return page, status


@bp.get("/schedules/<int:schedule_id>")
def schedule_page(schedule_id: int):
    return _schedule_page(schedule_id)


@bp.post("/schedules/<int:schedule_id>")
def schedule_edit_form(schedule_id: int):
    """Edit, pause/resume (`enabled`) or delete (`action=delete`) from the page."""
    try:
        if request.form.get("action") == "delete":
            delete_schedule(schedule_id)
            return redirect(url_for("pages.schedules_page"), 303)
        update_schedule(schedule_id, request.form)
    except ApiError as exc:
        if exc.status in (403, 404):
            abort(exc.status)
        return _schedule_page(schedule_id, exc.message, exc.status)
    return redirect(url_for("pages.schedule_page", schedule_id=schedule_id), 303)
