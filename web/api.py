"""JSON API under /api/v1. Errors are {"error": {"code", "message"}} with a fitting status."""

from __future__ import annotations

import shutil
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from db.accounts import audit
from db.jobs import cancel_job, results_page, series_summary
from db.models import AuditEvent, Job, ModelVersion
from db.registry import (
    VersionInUse,
    VersionNotFound,
    VersionSuperseded,
    activate_version,
    delete_version,
)
from db.result_pages import BadView, Cursor, ResultView, result_page
from scanq import DISCLAIMER
from web.access import may_see, owner_name, require_admin, visible
from web.http import ApiError, boolean_field, bounded_number, db_session, settings
from web.multipart import MalformedUpload
from web.serialize import iso, job_json, model_json, result_json, results_csv
from web.submission import NO_FILES, submit_inference_job
from web.training import submit_training_job
from web.upload_form import open_upload

bp = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_PAGE = 1000


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return jsonify(error={"code": exc.code, "message": exc.message}), exc.status


# What the registry refuses, as API errors.
REGISTRY_ERRORS = {
    VersionNotFound: (404, "model_version_not_found"),
    VersionInUse: (409, "model_version_in_use"),
    VersionSuperseded: (409, "model_version_superseded"),
}


@bp.errorhandler(VersionNotFound)
@bp.errorhandler(VersionInUse)
@bp.errorhandler(VersionSuperseded)
def _registry_error(exc: Exception):
    status, code = REGISTRY_ERRORS[type(exc)]
    return _api_error(ApiError(status, code, str(exc)))


def _get_job(session, job_id: str) -> Job:
    """The job, if this user may see it; someone else's is as missing as a bad id."""
    job = session.get(Job, job_id)
    if not may_see(job):
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job


@bp.post("/jobs")
def create_job():
    try:
        upload = open_upload(request)  # files stream in; fields sent before them are read
    except MalformedUpload as exc:
        raise ApiError(400, "bad_upload", str(exc)) from None
    if not upload.has_files:
        raise ApiError(400, "no_files", NO_FILES)
    form = upload.fields
    modality = (form.get("modality") or "").strip().lower()
    if not modality:
        raise ApiError(400, "missing_modality", "modality is required: xray or ct")
    job = submit_inference_job(
        upload.files(),
        modality,
        form.get("model_version") or None,
        owner=owner_name(),
        skip_out_of_distribution=boolean_field(form, "skip_out_of_distribution"),
    )
    body = {
        "id": job.id,
        "status": job.status,
        "total": job.total,
        "failed": job.failed,
        "links": job_json(job)["links"],
    }
    return jsonify(body), 202, {"Location": f"/api/v1/jobs/{job.id}"}


@bp.post("/training-jobs")
def create_training_job():
    upload = request.files.get("dataset")
    archive = upload.read() if upload else None
    require_admin()
    job, dataset = submit_training_job(request.form, archive, owner=owner_name())
    body = {"id": job.id, "status": job.status, "total": job.total, "dataset": dataset,
            "links": job_json(job)["links"]}  # fmt: skip
    return jsonify(body), 202, {"Location": f"/api/v1/jobs/{job.id}"}


@bp.get("/jobs")
def list_jobs():
    limit = _int_arg("limit", 50, 1, 500)
    kind = request.args.get("kind")
    if kind not in (None, "inference", "training"):
        raise ApiError(400, "bad_kind", "kind must be inference or training")
    query = visible(select(Job)).order_by(Job.created_at.desc()).limit(limit)
    if kind:
        query = query.where(Job.kind == kind)
    with db_session() as session:
        return jsonify(items=[job_json(j) for j in session.scalars(query)])


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    with db_session() as session:
        return jsonify(job_json(_get_job(session, job_id)))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    with db_session() as session:
        job = _get_job(session, job_id)
        if not cancel_job(session, job_id):
            raise ApiError(409, "job_finished", f"job {job_id} is already {job.status}")
        session.refresh(job)
        return jsonify(job_json(job))


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    return bounded_number(request.args, name, int, default, lo, hi)


@bp.get("/jobs/<job_id>/results")
def results(job_id: str):
    """A page of results: `sort` position (upload order, the default) or probability,
    `order` asc or desc, `filter` all, positive, flagged or failed; `next` links the
    following page (keyset cursor) with the same view."""
    limit = _int_arg("limit", 100, 1, MAX_PAGE)
    view, cursor = result_view(request.args)
    with db_session() as session:
        _get_job(session, job_id)
        rows, next_cursor = result_page(session, job_id, view, limit, cursor)
        query = urlencode({"limit": limit, **view.query_args()})
        return jsonify(
            items=[result_json(s, r) for s, r in rows],
            next=(
                f"/api/v1/jobs/{job_id}/results?{query}&cursor={next_cursor.text(view)}"
                if next_cursor is not None
                else None
            ),
            disclaimer=DISCLAIMER,
        )


def result_view(args) -> tuple[ResultView, Cursor | None]:
    """The view and cursor of a results request, or a 400 naming the bad parameter."""
    try:
        view = ResultView.parse(args)
        return view, Cursor.parse(args.get("cursor"), view)
    except BadView as exc:
        raise ApiError(400, f"bad_{exc.field}", str(exc)) from None


@bp.get("/jobs/<job_id>/series")
def series(job_id: str):
    """DICOM series and multi-frame files of a job, each scored by the study rule
    (models.study_aggregate: the measured aggregate over its lung slices in
    distribution, or an abstention with the reason), with its highest slice probability
    beside it."""
    with db_session() as session:
        _get_job(session, job_id)
        return jsonify(items=series_summary(session, job_id), disclaimer=DISCLAIMER)


@bp.get("/jobs/<job_id>/results.csv")
def results_as_csv(job_id: str):
    with db_session() as session:
        _get_job(session, job_id)
        rows = results_page(session, job_id, 2**31 - 1)
        thresholds = dict(session.execute(select(ModelVersion.id, ModelVersion.threshold)).all())
        body = results_csv(rows, thresholds)
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="scanq-{job_id}.csv"'},
    )


@bp.get("/models")
def list_models():
    with db_session() as session:
        versions = session.scalars(select(ModelVersion).order_by(ModelVersion.id)).all()
        return jsonify(items=[model_json(v) for v in versions])


@bp.get("/models/<int:version_id>")
def get_model(version_id: int):
    with db_session() as session:
        version = session.get(ModelVersion, version_id)
        if version is None:
            raise VersionNotFound(f"no model version {version_id}")
        return jsonify(model_json(version))


@bp.delete("/models/<int:version_id>")
def delete_model(version_id: int):
    require_admin()
    with db_session() as session:
        path = delete_version(session, version_id).path
        audit(session, owner_name(), "delete_model", f"model_version:{version_id}")
    folder = settings().version_dir(path).resolve()
    if settings().data_dir.resolve() in folder.parents:
        shutil.rmtree(folder, ignore_errors=True)
    return "", 204


@bp.post("/models/<int:version_id>/activate")
def activate(version_id: int):
    require_admin()
    with db_session() as session:
        version = activate_version(session, version_id)
        audit(session, owner_name(), "activate_model", f"model_version:{version_id}",
              {"modality": version.modality})  # fmt: skip
        return jsonify(model_json(version))


@bp.get("/audit")
def audit_trail():
    """The newest audit events (admins): who did what to which object, and when."""
    require_admin()
    limit = _int_arg("limit", 100, 1, 1000)
    with db_session() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
        items = [{"at": iso(e.at), "user": e.user, "action": e.action, "target": e.target,
                  "detail": e.detail} for e in rows]  # fmt: skip
        return jsonify(items=items)
