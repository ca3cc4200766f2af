"""What site monitoring reads from SQL: the results of one model version whose labels a
reviewer confirmed, and every result it scored, optionally within a time range or one
user's jobs. Only plain rows come out; the figures are computed by web.monitoring with
models.metrics and models.drift (NumPy, no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.models import Job, Result, Review, Scan


@dataclass(frozen=True)
class Scope:
    """Which results count: one version's, scored within [since, until), of one
    user's jobs when `owner` is set."""

    version_id: int
    since: datetime | None = None
    until: datetime | None = None
    owner: str | None = None

    def apply(self, query: Select) -> Select:
        query = query.where(Result.model_version_id == self.version_id, Result.error.is_(None))
        if self.since is not None:
            query = query.where(Result.created_at >= self.since)
        if self.until is not None:
            query = query.where(Result.created_at < self.until)
        if self.owner is not None:
            query = query.where(Job.owner == self.owner)
        return query


@dataclass(frozen=True)
class Confirmed:
    scan_id: int
    probability: float | None  # None: not scored (out of distribution, job skipped it)
    label: int  # 1 covid, 0 non_covid, as the reviewer confirmed it
    patient: str  # the bootstrap's unit: patient id, else CT series, else the image


def patient_key(patient_id: str | None, series: str | None, sha256: str | None, scan_id: int):
    """Images of one patient are not independent: the reviewer's patient id where given,
    else the DICOM series (slices of one series are one patient's), else the image's
    bytes (the same file scored twice is one image), else the scan itself."""
    if patient_id:
        return f"patient:{patient_id}"
    if series:
        return f"series:{series}"
    return f"image:{sha256}" if sha256 else f"scan:{scan_id}"


def confirmed(session: Session, scope: Scope) -> list[Confirmed]:
    query = (
        select(Result.scan_id, Result.probability, Review.label, Review.patient_id,
               Scan.series, Scan.sha256)
        .join(Review, Review.scan_id == Result.scan_id)
        .join(Scan, Scan.id == Result.scan_id)
        .join(Job, Job.id == Result.job_id)
        .order_by(Result.scan_id)
    )  # fmt: skip
    rows = session.execute(scope.apply(query))
    return [
        Confirmed(scan_id, prob, int(label == "covid"), patient_key(pid, series, sha, scan_id))
        for scan_id, prob, label, pid, series, sha in rows
    ]


def scored(session: Session, scope: Scope) -> list[tuple[datetime, float | None, float | None,
                                                          bool | None]]:  # fmt: skip
    """(scored at (UTC), probability, ood_score, flagged) of every result in scope."""
    query = (
        select(Result.created_at, Result.probability, Result.ood_score,
               Result.out_of_distribution)
        .join(Job, Job.id == Result.job_id)
        .order_by(Result.created_at)
    )  # fmt: skip
    return [(_utc(at), p, s, f) for at, p, s, f in session.execute(scope.apply(query))]


def count_scored(session: Session, scope: Scope) -> int:
    query = select(func.count(Result.id)).join(Job, Job.id == Result.job_id)
    return int(session.scalar(scope.apply(query)) or 0)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt  # SQLite drops it
