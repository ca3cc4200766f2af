"""/api/v1/results/<scan_id>: one image's result, its Grad-CAM picture and its
reviewer label; /api/v1/labels: the pool of confirmed labels."""

from __future__ import annotations

from flask import jsonify, request, send_file

from db.models import MODALITIES
from db.reviews import pool
from web.access import require_admin
from web.api import bp
from web.http import ApiError, db_session
from web.reviews import heatmap_file, record_review, result_detail, review_json


@bp.get("/results/<int:scan_id>")
def get_result(scan_id: int):
    with db_session() as session:
        return jsonify(result_detail(session, scan_id))


@bp.post("/results/<int:scan_id>/review")
def review_result(scan_id: int):
    body = request.get_json(silent=True) or request.form
    return jsonify(record_review(scan_id, body)), 201


@bp.get("/results/<int:scan_id>/heatmap.png")
def heatmap(scan_id: int):
    """200 with the picture once made; 202 while a worker makes it (ask again)."""
    path, possible = heatmap_file(scan_id)
    if path is not None:
        return send_file(path, mimetype="image/png", max_age=3600)
    if not possible:
        raise ApiError(409, "not_scored", "only a scored image has a heat map")
    return jsonify(status="pending", retry_after=1), 202, {"Retry-After": "1"}


@bp.get("/labels")
def labels():
    require_admin()  # the pool holds every user's images
    modality = (request.args.get("modality") or "").strip().lower()
    if modality not in MODALITIES:
        raise ApiError(400, "bad_modality", f"modality must be one of {', '.join(MODALITIES)}")
    with db_session() as session:
        items = [
            {
                "scan_id": scan.id,
                "filename": scan.filename,
                "sha256": scan.sha256,
                **review_json(review),
            }  # fmt: skip
            for scan, review in pool(session, modality)
        ]
        return jsonify(items=items)
