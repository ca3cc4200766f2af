"""Reviewer labels: confirm or correct what the model said about a scored image.
Confirmed labels, per modality, are the pool scheduled retraining learns from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import LABELS, Job, Result, Review, Scan, utcnow


class ReviewError(ValueError):
    """A review that cannot be recorded; the message says why, `code` names the case
    ("bad_label" or "not_scored")."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def save_review(
    session: Session, scan_id: int, label: str, reviewer: str, patient_id: str | None = None
) -> Review:
    """Record (or replace) the label of a scored image."""
    if label not in LABELS:
        raise ReviewError("bad_label", f"label must be one of {', '.join(LABELS)}")
    scan = session.get(Scan, scan_id)
    if scan is None:
        raise LookupError(f"no scan {scan_id}")
    result = session.scalar(select(Result).where(Result.scan_id == scan_id))
    if result is None or result.error:
        raise ReviewError(
            "not_scored", "only a scored image can be reviewed; this one has no score"
        )
    modality = session.scalar(select(Job.modality).where(Job.id == scan.job_id))
    review = session.scalar(select(Review).where(Review.scan_id == scan_id))
    now = utcnow()
    if review is None:
        review = Review(scan_id=scan_id, modality=modality, created_at=now)
        session.add(review)
    review.label, review.reviewer, review.updated_at = label, reviewer, now
    review.patient_id = (patient_id or "").strip() or None
    review.model_label = result.label
    session.flush()
    return review


def pool(session: Session, modality: str) -> list[tuple[Scan, Review]]:
    """Every reviewed image of a modality, oldest first."""
    rows = session.execute(
        select(Scan, Review)
        .join(Review, Review.scan_id == Scan.id)
        .where(Review.modality == modality)
        .order_by(Review.updated_at, Review.id)
    )
    return [(scan, review) for scan, review in rows]


def new_labels(
    session: Session, modality: str, since: datetime | None
) -> tuple[int, datetime | None]:
    """(how many reviews of the modality are newer than `since`, the newest review time)."""
    query = select(func.count(Review.id), func.max(Review.updated_at)).where(
        Review.modality == modality
    )
    if since is not None:
        query = query.where(Review.updated_at > since)
    count, newest = session.execute(query).one()
    return int(count), newest
