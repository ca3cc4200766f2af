"""One delivery of a batch's work, read from SQL as a typed value: which scans, with
which model version and threshold, and what earlier deliveries of the batch left
behind (a file that crashed the process, attempts that died whole). worker.tasks reads
it and scores it; nothing else of the row objects leaves the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.jobs import claim_batch, next_queued_batch, pending_scans
from db.models import Batch, Job, ModelVersion
from worker.scoring import ScanRef

# Deliveries of a batch that may die whole before it is scored one file at a time.
ISOLATE_AFTER_ATTEMPTS = 2


@dataclass(frozen=True)
class VersionRef:
    """The model version a job scores with, as the per-process cache loads it."""

    id: int
    path: str
    temperature: float
    backbone: str
    modality: str
    threshold: float

    @property
    def load_args(self) -> tuple[int, str, float, str]:
        """worker.runtime.predictor_for's (and worker.warmup's) arguments."""
        return (self.id, self.path, self.temperature, self.backbone)


@dataclass(frozen=True)
class BatchWork:
    batch_id: int
    job_id: str
    version: VersionRef
    scans: list[ScanRef]
    # Job option: images flagged out of distribution get no probability at all.
    skip_out_of_distribution: bool
    queued_ms: float | None  # from the (last) send to this delivery's start
    # The scan in hand when the last delivery died: it is left out this time.
    suspect_scan_id: int | None
    # Earlier deliveries died whole: score one file at a time.
    isolate: bool
    # The job's next queued batch, decoded while this one is in the model.
    next_batch: tuple[int, list[ScanRef]] | None


def version_of_batch(session: Session, batch_id: int) -> VersionRef | None:
    """The version a batch is scored with, without claiming it; None if the batch is
    gone or no longer waiting."""
    version = session.scalar(
        select(ModelVersion)
        .join(Job, Job.model_version_id == ModelVersion.id)
        .join(Batch, Batch.job_id == Job.id)
        .where(Batch.id == batch_id, Batch.status.in_(("queued", "running")))
    )
    return _version(version) if version is not None else None


def _version(v: ModelVersion) -> VersionRef:
    return VersionRef(v.id, v.path, v.temperature, v.backbone, v.modality, v.threshold)


def claim_work(session: Session, data_dir: Path, batch_id: int) -> BatchWork | None:
    """Claim the batch (queued|running -> running, one more attempt) and read its work;
    None when there is nothing to do (done, or its job cancelled)."""
    batch = claim_batch(session, batch_id)
    if batch is None:
        return None
    job = session.get(Job, batch.job_id)
    upcoming = next_queued_batch(session, batch)
    queued = (batch.started_at - batch.enqueued_at) if batch.enqueued_at else None
    return BatchWork(
        batch_id=batch_id,
        job_id=job.id,
        version=_version(session.get(ModelVersion, job.model_version_id)),
        scans=[ScanRef(s.id, data_dir / s.stored_path) for s in pending_scans(session, batch_id)],
        skip_out_of_distribution=bool((job.options or {}).get("skip_out_of_distribution")),
        queued_ms=round(queued.total_seconds() * 1000, 2) if queued is not None else None,
        suspect_scan_id=batch.probing_scan_id,
        isolate=batch.attempts > ISOLATE_AFTER_ATTEMPTS,
        next_batch=upcoming
        and (upcoming[0], [ScanRef(s.id, data_dir / s.stored_path) for s in upcoming[1]]),
    )
