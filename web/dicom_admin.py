"""Admin API for DICOM peers and DICOMweb pull sources, the same operations as
`scanq dicom peer ...` / `scanq dicom source ...`: GET/POST /api/v1/dicom/peers,
DELETE /api/v1/dicom/peers/<AE title>, and likewise under /api/v1/dicom/sources."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from db.peers import (
    PeerError,
    add_peer,
    add_source,
    list_peers,
    list_sources,
    peer_json,
    remove_peer,
    remove_source,
    source_json,
)
from web.access import owner_name, require_admin
from web.http import ApiError, api_error_response, db_session

bp = Blueprint("dicom_admin", __name__, url_prefix="/api/v1/dicom")


bp.register_error_handler(ApiError, api_error_response)


@bp.before_request
def _admins_only():
    require_admin()


def _body() -> dict:
    return request.get_json(silent=True) or request.form.to_dict()


@bp.get("/peers")
def peers():
    with db_session() as session:
        return jsonify(items=[peer_json(p) for p in list_peers(session)])


def _created(make, code: str, to_json):
    """201 with the row `make(session)` adds, or 400 `code` with why it cannot."""
    with db_session() as session:
        try:
            row = make(session)
        except PeerError as exc:
            raise ApiError(400, code, str(exc)) from None
        return jsonify(to_json(row)), 201


def _deleted(remove, key: str, code: str, what: str):
    """204 once `remove` deleted `key`, or 404 `code` when there was none."""
    with db_session() as session:
        if not remove(session, key, by=owner_name()):
            raise ApiError(404, code, f"no {what} {key!r}")
    return "", 204


@bp.post("/peers")
def create_peer():
    body = _body()
    try:
        port = int(body.get("port") or 0)
    except (TypeError, ValueError):
        raise ApiError(400, "bad_peer", "port must be an integer") from None
    by = owner_name()
    return _created(
        lambda s: add_peer(s, body.get("ae_title", ""), body.get("host", ""), port,
                           body.get("user", ""), by=by),
        "bad_peer",
        peer_json,
    )  # fmt: skip


@bp.delete("/peers/<ae_title>")
def delete_peer(ae_title: str):
    return _deleted(remove_peer, ae_title, "peer_not_found", "DICOM peer")


@bp.get("/sources")
def sources():
    with db_session() as session:
        return jsonify(items=[source_json(s) for s in list_sources(session)])


@bp.post("/sources")
def create_source():
    body = _body()
    by = owner_name()
    return _created(
        lambda s: add_source(s, body.get("name", ""), body.get("url", ""),
                             body.get("username"), body.get("password_env"), by=by),
        "bad_source",
        source_json,
    )  # fmt: skip


@bp.delete("/sources/<name>")
def delete_source(name: str):
    return _deleted(remove_source, name, "source_not_found", "DICOMweb source")
