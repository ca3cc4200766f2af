"""A study's results back in the PACS: `GET /api/v1/studies/<id>/deliveries` (each
delivery's state: pending, sent, or failed with the reason) and
`POST /api/v1/studies/<id>/send` (send again, or for the first time; optionally to
another destination: {"peer": "AE_TITLE"} or {"dicomweb": "source name"}), and the
study page's button for the same (`POST /studies/<id>/send`).

Sending again is always safe: the objects keep their SOP Instance UIDs, so the PACS
replaces its copy. Seen and sent by the study's owner and admins only (anyone else
gets the 404 of a missing study); every request is in the audit trail."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, redirect, request, url_for

from db.deliveries import deliveries_of_study, describe
from pacs.dispatch import NoDestination, NothingToSend, named_target, request_send
from scanq import DISCLAIMER
from web.access import owner_name
from web.extensions import get_celery
from web.http import ApiError, api_error_response, db_session
from web.studies import visible_study
from worker.celery_app import SEND_DELIVERY

log = logging.getLogger(__name__)
bp = Blueprint("deliveries_api", __name__, url_prefix="/api/v1")
pages = Blueprint("deliveries_pages", __name__)


bp.register_error_handler(ApiError, api_error_response)


def _state(session, study_id: int) -> dict:
    return {
        "study": study_id,
        "deliveries": [describe(row) for row in deliveries_of_study(session, study_id)],
        "disclaimer": DISCLAIMER,
    }


@bp.get("/studies/<int:study_id>/deliveries")
def study_deliveries(study_id: int):
    with db_session() as session:
        visible_study(session, study_id)
        return jsonify(_state(session, study_id))


def start_send(study_id: int, body) -> dict:
    """Queue a study's deliveries (again), to a named destination if the body names one;
    the study's delivery state. ApiError when it cannot."""
    peer = str(body.get("peer") or "").strip()
    dicomweb = str(body.get("dicomweb") or "").strip()
    if peer and dicomweb:
        raise ApiError(400, "two_destinations", "name a peer or a DICOMweb server, not both")
    with db_session() as session:
        visible_study(session, study_id)
        try:
            target = named_target(session, peer, dicomweb) if peer or dicomweb else None
            queued = request_send(session, study_id, owner_name(), target)
        except NoDestination as exc:
            raise ApiError(409, "no_destination", str(exc)) from None
        except NothingToSend as exc:
            raise ApiError(409, "not_screened", str(exc)) from None
        session.flush()
        state = _state(session, study_id)
    celery = get_celery()
    for delivery_id, generation in queued:
        try:
            celery.send_task(SEND_DELIVERY, args=[delivery_id, generation])
        except Exception:  # the broker is down: the delivery sweep sends pending rows
            log.exception("delivery %s: could not be queued", delivery_id)
    return state


@bp.post("/studies/<int:study_id>/send")
def send_study(study_id: int):
    return jsonify(start_send(study_id, request.get_json(silent=True) or request.form)), 202


@pages.post("/studies/<int:study_id>/send")
def send_page(study_id: int):
    """The study page's "send results again" button."""
    try:
        start_send(study_id, request.form)
        message = "results queued to be sent"
    except ApiError as exc:
        if exc.status == 404:
            return exc.message, 404
        message = f"not sent: {exc.message}"
    return redirect(url_for("studies_pages.study_page", study_id=study_id, message=message), 303)
