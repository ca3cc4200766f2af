"""The study worklist and pulls: `GET /api/v1/studies` (sorted by score, with filters),
`GET /api/v1/studies/<id>`, `POST /api/v1/pulls` / `GET /api/v1/pulls/<id>`, and the
/studies page (worklist and a pull form).

Patient id, accession number and study date from the headers are shown to the study's
owner and to admins only; as with jobs, nobody else can see the study at all (the same
404 as a missing id)."""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from db.accounts import audit
from db.deliveries import deliveries_of_study, describe
from db.models import AuditEvent, DicomPeer, Study
from db.peers import get_peer_by_ae, get_source, list_sources
from db.studies import (
    WORKLIST_FILTERS,
    WORKLIST_SORTS,
    instance_counts,
    study_jobs,
    worklist,
)
from pacs.pull import PullError, check_query, pull_outcome
from scanq import DISCLAIMER
from web.access import owner_name
from web.auth import current_user
from web.extensions import get_celery
from web.http import ApiError, api_error_response, db_session
from web.serialize import iso, job_json
from worker.celery_app import PULL_STUDIES

api = Blueprint("studies_api", __name__, url_prefix="/api/v1")
pages = Blueprint("studies_pages", __name__)
MAX_PAGE = 500


api.register_error_handler(ApiError, api_error_response)


def visible_study(session, study_id: int) -> Study:
    """The study `study_id` if the current user may see it: its owner, or an admin.
    Anyone else gets ApiError 404, the answer of a missing id, so study ids cannot be
    probed. Every endpoint about one study (its detail and page here, its deliveries in
    web.deliveries_api) looks it up through this."""
    study = session.get(Study, study_id)
    user = current_user()
    if study is None or not (user.is_admin or study.owner == user.name):
        raise ApiError(404, "study_not_found", f"no study {study_id}")
    return study


def _visible_worklist(session, sort: str, filters: tuple[str, ...], limit: int, offset: int):
    """The worklist page of the studies this user may see, as JSON items, and the total."""
    user = current_user()
    owner = None if user.is_admin else user.name
    rows, total = worklist(session, owner, sort, filters, limit, offset)
    peers = _peer_names(session)
    return [study_json(s, peers) for s in rows], total


def _detail(session, study: Study) -> dict:
    """A study with its verdict, where its instances went, its jobs and deliveries."""
    body = study_json(study, _peer_names(session))
    body["verdict"] = study.verdict  # None until the study is screened
    body["instances_by_route"] = instance_counts(session, study.id)
    body["jobs"] = [job_json(j) for j in study_jobs(session, study.id)]
    body["deliveries"] = [describe(r) for r in deliveries_of_study(session, study.id)]
    return body


def study_json(study: Study, peers: dict[int, str]) -> dict:
    """A study as its owner (or an admin) sees it, patient fields included."""
    return {
        "id": study.id,
        "study_uid": study.study_uid,
        "owner": study.owner,
        "status": study.status,
        "source": study.source,
        "peer": peers.get(study.peer_id),
        "results_to": peers.get(study.results_to_peer_id),
        "modalities": [m for m in (study.modalities or "").split(",") if m],
        "instances": study.instances,
        "not_screened": study.not_screened,
        "score": study.score,
        "label": study.label,
        "flagged": study.flagged,
        "failed": study.failed,
        "first_received_at": iso(study.first_received_at),
        "last_received_at": iso(study.last_received_at),
        "settled_at": iso(study.settled_at),
        "verdict_at": iso(study.verdict_at),
        "patient": {
            "patient_id": study.patient_id,
            "accession": study.accession,
            "study_date": study.study_date,
        },
        "links": {"self": f"/api/v1/studies/{study.id}", "page": "/studies"},
    }


def _peer_names(session) -> dict[int, str]:
    return dict(session.execute(select(DicomPeer.id, DicomPeer.ae_title)).all())


def _worklist_args() -> tuple[str, tuple[str, ...], int, int]:
    sort = request.args.get("sort", "score")
    if sort not in WORKLIST_SORTS:
        raise ApiError(400, "bad_sort", f"sort must be one of {', '.join(WORKLIST_SORTS)}")
    chosen = []
    for name in WORKLIST_FILTERS:
        raw = (request.args.get(name) or "").strip().lower()
        if raw in ("1", "true", "yes", "on"):
            chosen.append(name)
        elif raw not in ("", "0", "false", "no", "off"):
            raise ApiError(400, f"bad_{name}", f"{name} must be true or false")
    for name in request.args.getlist("filter"):
        if name not in WORKLIST_FILTERS:
            raise ApiError(
                400, "bad_filter", f"filter must be one of {', '.join(WORKLIST_FILTERS)}"
            )
        chosen.append(name)
    try:
        limit = min(max(int(request.args.get("limit", 100)), 1), MAX_PAGE)
        offset = max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        raise ApiError(400, "bad_page", "limit and offset are integers") from None
    return sort, tuple(dict.fromkeys(chosen)), limit, offset


@api.get("/studies")
def list_studies():
    sort, filters, limit, offset = _worklist_args()
    with db_session() as session:
        items, total = _visible_worklist(session, sort, filters, limit, offset)
    return jsonify(
        items=items, total=total, sort=sort, filters=list(filters), disclaimer=DISCLAIMER
    )


@api.get("/studies/<int:study_id>")
def get_study(study_id: int):
    with db_session() as session:
        body = _detail(session, visible_study(session, study_id))
    body["disclaimer"] = DISCLAIMER
    return jsonify(body)


def start_pull(form, owner: str) -> str:
    """Check a pull request and queue it; returns the pull's id."""
    source_name = (form.get("source") or "").strip()
    try:
        query = check_query(
            form.get("modality"), form.get("since"), form.get("study_uid") or form.get("study")
        )
    except PullError as exc:
        raise ApiError(400, "bad_pull", str(exc)) from None
    with db_session() as session:
        if get_source(session, source_name) is None:
            raise ApiError(404, "source_not_found", f"no DICOMweb source {source_name!r}")
        results_to = None
        if form.get("results_to"):
            peer = get_peer_by_ae(session, form["results_to"])
            if peer is None:
                raise ApiError(400, "unknown_peer", f"no DICOM peer {form['results_to']!r}")
            results_to = peer.id
        pull_id = uuid.uuid4().hex
        audit(
            session,
            owner,
            "dicom_pull_start",
            f"pull:{pull_id}",
            {"source": source_name, "query": query, "results_to": form.get("results_to")},
        )
    try:
        get_celery().send_task(PULL_STUDIES, args=[pull_id, source_name, query, owner, results_to])
    except Exception:
        with db_session() as session:  # the pull is over before it began: say so
            why = "not started: the task queue was unreachable"
            never = pull_outcome(pull_id, source_name, [why])
            audit(session, owner, "dicom_pull", f"pull:{pull_id}", never)
        raise ApiError(
            503, "queue_unavailable", "the task queue cannot be reached; try again shortly"
        ) from None
    return pull_id


def pull_state(session, pull_id: str) -> dict | None:
    rows = session.scalars(
        select(AuditEvent).where(AuditEvent.target == f"pull:{pull_id}").order_by(AuditEvent.id)
    ).all()
    if not rows:
        return None
    start = rows[0]
    done = next((r for r in rows if r.action == "dicom_pull"), None)
    return {
        "id": pull_id,
        "user": start.user,
        "status": "done" if done else "running",
        "requested": start.detail,
        "started_at": iso(start.at),
        "finished_at": iso(done.at) if done else None,
        **({"outcome": done.detail} if done else {}),
    }


@api.post("/pulls")
def create_pull():
    form = request.get_json(silent=True) or request.form
    pull_id = start_pull(form, owner_name())
    return jsonify(id=pull_id, status="running", links={"self": f"/api/v1/pulls/{pull_id}"}), 202


@api.get("/pulls/<pull_id>")
def get_pull(pull_id: str):
    with db_session() as session:
        state = pull_state(session, pull_id)
    user = current_user()
    if state is None or not (user.is_admin or state["user"] == user.name):
        raise ApiError(404, "pull_not_found", f"no pull {pull_id}")
    return jsonify(state)


@pages.get("/studies")
def studies_page():
    try:
        sort, filters, limit, offset = _worklist_args()
    except ApiError as exc:
        return exc.message, exc.status
    with db_session() as session:
        studies, total = _visible_worklist(session, sort, filters, limit, offset)
        sources = [s.name for s in list_sources(session)]
    return render_template(
        "studies.html",
        studies=studies,
        total=total,
        sort=sort,
        filters=filters,
        all_filters=WORKLIST_FILTERS,
        sources=sources,
        message=request.args.get("message"),
    )


@pages.post("/studies/pull")
def pull_page():
    try:
        pull_id = start_pull(request.form, owner_name())
        message = f"pull {pull_id} started"
    except ApiError as exc:
        message = f"pull refused: {exc.message}"
    return redirect(url_for("studies_pages.studies_page", message=message), 303)


@pages.get("/studies/<int:study_id>")
def study_page(study_id: int):
    with db_session() as session:
        try:
            body = _detail(session, visible_study(session, study_id))
        except ApiError as exc:
            return exc.message, exc.status
    return render_template("study.html", study=body)
