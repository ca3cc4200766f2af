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
from web.http import ApiError, db_session

bp = Blueprint("dicom_admin", __name__, url_prefix="/api/v1/dicom")


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return jsonify(error={"code": exc.code, "message": exc.message}), exc.status


@bp.before_request
def _admins_only():
    require_admin()


def _body() -> dict:
    return request.get_json(silent=True) or request.form.to_dict()


@bp.get("/peers")
def peers():
    with db_session() as session:
        return jsonify(items=[peer_json(p) for p in list_peers(session)])


@bp.post("/peers")
def create_peer():
    body = _body()
    try:
        port = int(body.get("port") or 0)
    except (TypeError, ValueError):
        raise ApiError(400, "bad_peer", "port must be an integer") from None
    with db_session() as session:
        try:
            peer = add_peer(
                session,
                body.get("ae_title", ""),
                body.get("host", ""),
                port,
                body.get("user", ""),
                by=owner_name(),
            )
        except PeerError as exc:
            raise ApiError(400, "bad_peer", str(exc)) from None
        return jsonify(peer_json(peer)), 201


@bp.delete("/peers/<ae_title>")
def delete_peer(ae_title: str):
    with db_session() as session:
        if not remove_peer(session, ae_title, by=owner_name()):
            raise ApiError(404, "peer_not_found", f"no DICOM peer {ae_title!r}")
    return "", 204


@bp.get("/sources")
def sources():
    with db_session() as session:
        return jsonify(items=[source_json(s) for s in list_sources(session)])


@bp.post("/sources")
def create_source():
    body = _body()
    with db_session() as session:
        try:
            source = add_source(
                session,
                body.get("name", ""),
                body.get("url", ""),
                body.get("username"),
                body.get("password_env"),
                by=owner_name(),
            )
        except PeerError as exc:
            raise ApiError(400, "bad_source", str(exc)) from None
        return jsonify(source_json(source)), 201


@bp.delete("/sources/<name>")
def delete_source(name: str):
    with db_session() as session:
        if not remove_source(session, name, by=owner_name()):
            raise ApiError(404, "source_not_found", f"no DICOMweb source {name!r}")
    return "", 204
