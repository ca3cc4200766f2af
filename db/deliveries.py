"""The delivery state of results sent back to a PACS (table dicom_delivery): one row per
study job, created pending, then sent, or failed with the reason once the retries ran
out. Only these functions change a row, and each change is checked against the row's
generation, which a resend raises, so a retry scheduled by an earlier send never
overwrites what a newer one did."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import DicomDelivery, iso, utcnow


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: a DICOM peer by C-STORE or a DICOMweb server by STOW-RS."""

    protocol: str  # "dimse" | "stow" (db.models.DELIVERY_PROTOCOLS)
    description: str
    peer_id: int | None = None
    dicomweb_source_id: int | None = None


def ensure_delivery(
    session: Session, study_id: int, job_id: str, target: Target, model_version: str | None
) -> tuple[DicomDelivery, bool]:
    """The delivery of a study job's results, created pending if it did not exist; and
    whether it was created now (at-least-once callers create it only once)."""
    row = session.execute(
        select(DicomDelivery).where(
            DicomDelivery.study_id == study_id, DicomDelivery.job_id == job_id
        )
    ).scalar_one_or_none()
    if row is not None:
        return row, False
    row = DicomDelivery(
        study_id=study_id,
        job_id=job_id,
        protocol=target.protocol,
        peer_id=target.peer_id,
        dicomweb_source_id=target.dicomweb_source_id,
        destination=target.description,
        status="pending",
        attempts=0,
        objects=0,
        sop_instance_uids=[],
        generation=0,
        model_version=model_version,
    )
    session.add(row)
    session.flush()
    return row, True


def deliveries_of_study(session: Session, study_id: int) -> list[DicomDelivery]:
    return list(
        session.execute(
            select(DicomDelivery)
            .where(DicomDelivery.study_id == study_id)
            .order_by(DicomDelivery.created_at, DicomDelivery.id)
        ).scalars()
    )


def current(session: Session, delivery_id: int, generation: int) -> DicomDelivery | None:
    """The row if it is pending at this generation (what a send task may work on)."""
    row = session.get(DicomDelivery, delivery_id)
    if row is None or row.generation != generation or row.status != "pending":
        return None
    return row


def record_failure(row: DicomDelivery, reason: str, final: bool) -> None:
    """One more failed attempt; `final` when no retry is left: the row is failed."""
    row.attempts += 1
    row.reason = reason[:2000]
    row.updated_at = utcnow()
    if final:
        row.status = "failed"


def record_sent(row: DicomDelivery, uids: list[str], note: str | None = None) -> None:
    row.attempts += 1
    row.status = "sent"
    row.objects = len(uids)
    row.sop_instance_uids = list(uids)
    row.reason = note
    row.sent_at = row.updated_at = utcnow()


def reset_for_resend(
    row: DicomDelivery, user: str | None, target: Target | None = None
) -> tuple[int, int]:
    """Make a delivery pending again (optionally to another destination); its id and
    new generation, for the send task."""
    row.generation += 1
    row.status = "pending"
    row.attempts = 0
    row.reason = None
    row.requested_by = user
    row.updated_at = utcnow()
    if target is not None:
        row.protocol = target.protocol
        row.peer_id = target.peer_id
        row.dicomweb_source_id = target.dicomweb_source_id
        row.destination = target.description
    return row.id, row.generation


def claim_stale(session: Session, before: datetime) -> list[tuple[int, int]]:
    """Pending deliveries nobody has touched since `before` (their task was lost, for
    instance sent while the broker was down), touched now so the next sweep leaves them
    alone: (id, generation) to send again."""
    rows = list(
        session.scalars(
            select(DicomDelivery).where(
                DicomDelivery.status == "pending", DicomDelivery.updated_at < before
            )
        )
    )
    for row in rows:
        row.updated_at = utcnow()
    return [(r.id, r.generation) for r in rows]


def describe(row: DicomDelivery) -> dict:
    """A delivery as the API shows it."""
    return {
        "id": row.id,
        "job_id": row.job_id,
        "status": row.status,
        "reason": row.reason,
        "protocol": row.protocol,
        "destination": row.destination,
        "attempts": row.attempts,
        "objects": row.objects,
        "sop_instance_uids": list(row.sop_instance_uids or []),
        "model_version": row.model_version,
        "requested_by": row.requested_by,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "sent_at": iso(row.sent_at),
    }
