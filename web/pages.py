"""HTML pages: upload, job list, job status with a live progress bar, results with
thumbnails, models. Every page that shows a result carries the disclaimer (base.html)."""

from __future__ import annotations

import io
from pathlib import Path

from flask import Blueprint, abort, redirect, render_template, request, send_file, url_for
from PIL import Image
from sqlalchemy import select

from db.jobs import series_summary
from db.models import MODALITIES, Job, ModelVersion
from db.registry import active_version
from db.result_pages import (
    BadView,
    Cursor,
    ResultView,
    filter_counts,
    probability_histogram,
    result_page,
)
from models.backbones import BACKBONES
from models.report import REPORT_FILES
from web.access import may_see, owner_name, require_admin, visible, visible_scan
from web.histogram import histogram_bars
from web.http import ApiError, boolean_field, db_session, settings
from web.multipart import MalformedUpload
from web.serialize import ood_warning, result_status
from web.submission import NO_FILES, submit_inference_job
from web.training import submit_training_job
from web.training_form import chosen_recipe, recipe_choices, training_fields
from web.upload_form import open_upload

bp = Blueprint("pages", __name__)
# The training options' fields (web.training_form), for the templates of the training
# and schedule forms and the macro they share.
bp.record_once(
    lambda state: state.app.jinja_env.globals.update(
        training_fields=training_fields, recipe_choices=recipe_choices, chosen_recipe=chosen_recipe
    )
)
THUMB = 96
PAGE_ROWS = 500  # result rows per job page; "Next" pages on, the CSV has all


def _front_page(error: str | None = None, status: int = 200):
    with db_session() as session:
        query = visible(select(Job)).order_by(Job.created_at.desc()).limit(20)
        jobs = session.scalars(query).all()
        active = {m: active_version(session, m) for m in MODALITIES}
        return render_template("index.html", jobs=jobs, active=active, error=error), status


@bp.get("/")
def index():
    return _front_page()


@bp.post("/upload")
def upload():
    """Files are stored and queued as they arrive, as through the API: the form sends
    its fields (CSRF token, modality, options) before the files."""
    try:
        parts = open_upload(request)
    except MalformedUpload as exc:
        return _front_page(str(exc), 400)
    if not parts.has_files:
        return _front_page(NO_FILES, 400)
    try:
        skip = boolean_field(parts.fields, "skip_out_of_distribution")
        job = submit_inference_job(parts.files(), parts.fields.get("modality", ""),
                                   owner=owner_name(), skip_out_of_distribution=skip)  # fmt: skip
    except ApiError as exc:
        return _front_page(exc.message, exc.status)
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.get("/jobs")
def jobs_page():
    with db_session() as session:
        query = visible(select(Job)).order_by(Job.created_at.desc()).limit(200)
        jobs = session.scalars(query).all()
        return render_template("jobs.html", jobs=jobs)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    """The job's progress and its results, in the view the query asks for (the API's
    sort, order and filter), a page of PAGE_ROWS at a time, with the histogram of its
    scores."""
    try:
        view = ResultView.parse(request.args)
        # `after` is the page's cursor from before views existed (a position).
        cursor = Cursor.parse(request.args.get("cursor", request.args.get("after")), view)
    except BadView:
        abort(400)
    with db_session() as session:
        job = session.get(Job, job_id)
        if not may_see(job):
            abort(404)
        rows, next_cursor = result_page(session, job_id, view, PAGE_ROWS, cursor)
        series = series_summary(session, job_id)
        version = session.get(ModelVersion, job.model_version_id) if job.model_version_id else None
        inference = job.kind == "inference"
        return render_template(
            "job.html",
            job=job,
            rows=rows,
            version=version,
            result_status=result_status,
            ood_warning=ood_warning,
            series=series,
            view=view,
            counts=filter_counts(session, job_id) if inference else {},
            histogram=histogram_bars(probability_histogram(session, job_id)) if inference else None,
            next_args=(
                {**view.query_args(), "cursor": next_cursor.text(view)} if next_cursor else None
            ),
            paged=cursor is not None,
        )


def _models_page(error: str | None = None, status: int = 200):
    with db_session() as session:
        versions = session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).all()
        page = render_template(
            "models.html", versions=versions, backbones=list(BACKBONES), error=error
        )
    return page, status


@bp.get("/models")
def models_page():
    return _models_page()


@bp.post("/train")
def train():
    upload = request.files.get("dataset")
    archive = upload.read() if upload and upload.filename else None
    try:
        require_admin()
        job, _dataset = submit_training_job(request.form, archive, owner=owner_name())
    except ApiError as exc:
        return _models_page(exc.message, exc.status)
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.get("/models/<int:version_id>/<name>")
def model_report_image(version_id: int, name: str):
    if name not in REPORT_FILES:
        abort(404)
    with db_session() as session:
        version = session.get(ModelVersion, version_id)
        if version is None:
            abort(404)
        path = settings().version_dir(version.path) / name
    if not path.is_file():
        abort(404)
    return send_file(path, mimetype="image/png", max_age=3600)


def stored_scan_path(scan_id: int) -> Path:
    """The stored file of a scan this user may see, or 404."""
    with db_session() as session:
        scan = visible_scan(session, scan_id)
        if scan is None or not scan.stored_path:
            abort(404)
        return settings().data_dir / scan.stored_path


@bp.get("/scans/<int:scan_id>/thumbnail.png")
def thumbnail(scan_id: int):
    path = stored_scan_path(scan_id)
    try:
        with Image.open(path) as im:
            im.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            im.convert("L").save(buf, "PNG")
    except (OSError, ValueError):
        abort(404)
    buf.seek(0)
    resp = send_file(buf, mimetype="image/png", max_age=86400)
    return resp
