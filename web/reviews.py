"""One scored image seen closely: its result, threshold, model version, Grad-CAM
picture and reviewer label. Shared by the JSON API and the result page."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select

from db.accounts import audit
from db.models import Job, ModelVersion, Result, Review, Scan
from db.reviews import ReviewError, save_review
from scanq import DISCLAIMER
from web.access import may_see, owner_name
from web.extensions import get_celery
from web.http import ApiError, db_session, settings
from web.serialize import iso, result_json
from worker.celery_app import EXPLAIN_SCAN


def review_json(review: Review | None) -> dict | None:
    if review is None:
        return None
    return {
        "label": review.label,
        "patient_id": review.patient_id,
        "reviewer": review.reviewer,
        "model_label": review.model_label,
        "agrees_with_model": review.model_label == review.label,
        "updated_at": iso(review.updated_at),
    }


def load_result(session, scan_id: int) -> tuple[Scan, Result | None, Job, ModelVersion | None]:
    scan = session.get(Scan, scan_id)
    job = session.get(Job, scan.job_id) if scan else None
    if not may_see(job):  # someone else's image is as missing as a bad id
        raise ApiError(404, "result_not_found", f"no scanned image {scan_id}")
    result = session.scalar(select(Result).where(Result.scan_id == scan_id))
    version = (
        session.get(ModelVersion, result.model_version_id)
        if result and result.model_version_id
        else None
    )
    return scan, result, job, version


def result_detail(session, scan_id: int) -> dict:
    scan, result, job, version = load_result(session, scan_id)
    review = session.scalar(select(Review).where(Review.scan_id == scan_id))
    body = result_json(scan, result)
    body |= {
        "job": job.id,
        "modality": job.modality,
        "threshold": version.threshold if version else None,
        "model_label": version.label if version else None,
        "review": review_json(review),
        "disclaimer": DISCLAIMER,
        "links": {
            "image": f"/scans/{scan_id}/image.png",
            "heatmap": f"/api/v1/results/{scan_id}/heatmap.png",
            "review": f"/api/v1/results/{scan_id}/review",
            "page": f"/results/{scan_id}",
        },
    }
    return body


def record_review(scan_id: int, values: Mapping) -> dict:
    label = str(values.get("label") or "").strip().lower()
    # The reviewer is the logged-in user; a "reviewer" field may only add a display
    # name (e.g. the radiologist at a shared workstation), kept beside it.
    shown = str(values.get("reviewer") or "").strip()
    reviewer = owner_name() if not shown or shown == owner_name() else f"{owner_name()} ({shown})"
    if len(reviewer) > 64:
        raise ApiError(400, "bad_reviewer", "reviewer must be at most 64 characters")
    patient = str(values.get("patient_id") or "").strip() or None
    if patient and len(patient) > 128:
        raise ApiError(400, "bad_patient_id", "patient_id must be at most 128 characters")
    with db_session() as session:
        load_result(session, scan_id)  # 404 unless this user may see it
        before = session.scalar(select(Review.label).where(Review.scan_id == scan_id))
        try:
            review = save_review(session, scan_id, label, reviewer, patient)
        except LookupError:
            raise ApiError(404, "result_not_found", f"no scanned image {scan_id}") from None
        except ReviewError as exc:
            status = 400 if exc.code == "bad_label" else 409
            raise ApiError(status, exc.code, str(exc)) from None
        audit(session, owner_name(), "review" if before is None else "change_label",
              f"scan:{scan_id}", {"from": before, "to": label, "model": review.model_label,
                                  "patient_id": patient})  # fmt: skip
        return review_json(review)


def heatmap_file(scan_id: int):
    """(path if made, True if it can be made); asks a worker to make it if not."""
    with db_session() as session:
        scan, result, _job, version = load_result(session, scan_id)
        if result is None or result.error or version is None:
            return None, False
        path = settings().heatmap_path(version.id, scan.sha256)
    if path.exists():
        return path, True
    get_celery().send_task(EXPLAIN_SCAN, args=[scan_id])
    return None, True
