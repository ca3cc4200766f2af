"""Tables. Ids of jobs are random hex strings (safe to expose, unique across machines);
everything else uses integer keys. Stored paths are relative to the data directory (or
`builtin/<modality>` for the shipped models) so rows stay valid on every machine that
mounts the same data directory."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_KINDS = ("inference", "training")
MODALITIES = ("xray", "ct")
JOB_STATUSES = ("receiving", "queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
BATCH_STATUSES = ("queued", "running", "done", "cancelled")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    """A stored time as the API writes it: ISO 8601 in UTC with a Z. SQLite drops the
    zone; every stored time is UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat().replace("+00:00", "Z")


def new_job_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON}


class ModelVersion(Base):
    __tablename__ = "model_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    modality: Mapped[str] = mapped_column(String(8), index=True)
    backbone: Mapped[str] = mapped_column(String(32))
    input_size: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(512))
    threshold: Mapped[float] = mapped_column(Float)
    temperature: Mapped[float] = mapped_column(Float, default=1.0)
    auc: Mapped[float | None] = mapped_column(Float)
    sensitivity: Mapped[float | None] = mapped_column(Float)
    specificity: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    data_fingerprint: Mapped[str | None] = mapped_column(String(64))
    training_job_id: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def label(self) -> str:
        return f"{self.modality}-v{self.id} ({self.backbone}@{self.input_size})"


class Job(Base):
    __tablename__ = "job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    kind: Mapped[str] = mapped_column(String(16), default="inference")
    modality: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # Scored images flagged out of distribution (counted within `done`).
    flagged: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    owner: Mapped[str | None] = mapped_column(String(64))
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A running training job's last report (a stale one means its worker died).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a training job's task was last sent (the reconciler re-sends a queued one
    # whose message may be lost).
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When an upload last added files (a `receiving` job silent too long is failed).
    received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    model_version: Mapped[ModelVersion | None] = relationship()


class Batch(Base):
    """One Celery task's worth of scans; its row lets a reconciler re-queue lost work."""

    __tablename__ = "batch"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Milliseconds spent queued, decoding, in the model and writing results (bench/).
    stats: Mapped[dict | None] = mapped_column(JSON)
    # While a batch is scored one file at a time (after crashes), the file in hand: if
    # the process dies, the next attempt knows which file to leave out.
    probing_scan_id: Mapped[int | None] = mapped_column(Integer)


class Scan(Base):
    __tablename__ = "scan"
    __table_args__ = (UniqueConstraint("job_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    stored_path: Mapped[str | None] = mapped_column(String(512))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    # DICOM: a CT series (SeriesInstanceUID) or a multi-frame file, and the slice or
    # frame number within it; the series summary is its highest slice probability.
    series: Mapped[str | None] = mapped_column(String(128), index=True)
    frame: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(String(300))  # a warning found at upload

    result: Mapped[Result | None] = relationship(back_populates="scan", uselist=False)


class Result(Base):
    """Exactly one per scan (unique scan_id), so a redelivered batch cannot add rows."""

    __tablename__ = "result"

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(
        ForeignKey("scan.id", ondelete="CASCADE"), unique=True, index=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    probability: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(16))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    error: Mapped[str | None] = mapped_column(Text)
    timing_ms: Mapped[float | None] = mapped_column(Float)
    # models.ood: distance to the version's training scans in units of its calibrated
    # threshold (> 1 flags), or None when the version has no calibration.
    ood_score: Mapped[float | None] = mapped_column(Float)
    out_of_distribution: Mapped[bool | None] = mapped_column(Boolean)
    ood_reason: Mapped[str | None] = mapped_column(String(200))
    # models.lung.share: share (0..1) of the heat map inside the segmented lungs, for
    # scored X-rays when a lung segmenter is shipped; None otherwise.
    lung_heat_share: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    scan: Mapped[Scan] = relationship(back_populates="result")
    model_version: Mapped[ModelVersion | None] = relationship()


LABELS = ("covid", "non_covid")


class Review(Base):
    """A reviewer's label for a scored image: confirms or corrects the model. Confirmed
    labels (with the patient id when given) form the per-modality pool that scheduled
    retraining learns from. One current review per scan; a new one replaces it."""

    __tablename__ = "review"

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(
        ForeignKey("scan.id", ondelete="CASCADE"), unique=True, index=True
    )
    modality: Mapped[str] = mapped_column(String(8), index=True)
    label: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[str | None] = mapped_column(String(128))
    reviewer: Mapped[str] = mapped_column(String(64))
    model_label: Mapped[str | None] = mapped_column(String(16))  # what the model said
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )

    scan: Mapped[Scan] = relationship()


class Schedule(Base):
    """Retraining on a timetable. The row is the source of truth; `scheduling.beat`
    mirrors enabled rows into celery-redbeat entries, which one beat (holding redbeat's
    lock) fires."""

    __tablename__ = "schedule"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    modality: Mapped[str] = mapped_column(String(8))
    cron: Mapped[str | None] = mapped_column(String(64))  # "m h dom mon dow"
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict] = mapped_column(JSON, default=dict)  # models.train.TrainConfig fields
    base_data_path: Mapped[str | None] = mapped_column(String(1024))
    min_new_labels: Mapped[int] = mapped_column(Integer, default=0)
    margin: Mapped[float] = mapped_column(Float, default=0.0)  # AUC the challenger must add
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When it last fired; a conditional update on it makes a second firing of the same
    # slot (two beats, a redelivered message) a no-op.
    last_fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Newest review time that a started run learned from: "new labels" are newer.
    labels_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ScheduleRun(Base):
    """One firing of a schedule and what came of it: skipped (too few new labels), a
    training run, then the gate's decision (promoted or kept the champion) and why."""

    __tablename__ = "schedule_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("schedule.id", ondelete="CASCADE"), index=True
    )
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[str] = mapped_column(String(16))  # skipped|training|promoted|kept|failed
    reason: Mapped[str | None] = mapped_column(Text)
    new_labels: Mapped[int] = mapped_column(Integer, default=0)
    training_job_id: Mapped[str | None] = mapped_column(String(32))
    champion_version_id: Mapped[int | None] = mapped_column(Integer)
    challenger_version_id: Mapped[int | None] = mapped_column(Integer)
    report: Mapped[dict | None] = mapped_column(JSON)  # both models on the same patients


ROLES = ("user", "admin")


class User(Base):
    """Someone who submits jobs ("user") or also manages models and schedules ("admin").
    Jobs, reviews and audit rows name users by `name`, which never changes."""

    __tablename__ = "app_user"  # "user" is a reserved word in PostgreSQL

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    role: Mapped[str] = mapped_column(String(8), default="user")
    password_hash: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """Only the SHA-256 of a token is kept; the token is shown once, when made."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    label: Mapped[str] = mapped_column(String(64), default="")
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Written at most once per accounts.TOKEN_TOUCH_INTERVAL, after the response.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """Who did what to which object: submitted a job, changed a label, activated a
    model, edited a schedule, made a token. Which model version scored an image is on
    its result row."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user: Mapped[str | None] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(128))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


# --- DICOM in (issue #19): peers, pull sources, studies and their instances ----------

STUDY_STATUSES = ("receiving", "screening", "screened", "not_screened")


class DicomPeer(Base):
    """A DICOM node allowed to send to the listener (its calling AE title) and to get
    results back (host, port). Everything it sends is owned by `owner`."""

    __tablename__ = "dicom_peer"

    id: Mapped[int] = mapped_column(primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True, index=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DicomwebSource(Base):
    """A DICOMweb server studies can be pulled from (QIDO-RS search, WADO-RS retrieve).
    A password is never stored: `password_env` names the environment variable that
    holds it."""

    __tablename__ = "dicomweb_source"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    url: Mapped[str] = mapped_column(String(1024))
    username: Mapped[str | None] = mapped_column(String(128))
    password_env: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Study(Base):
    """A DICOM study as received, one per owner and StudyInstanceUID. Patient id,
    accession number and study date come from the headers and are shown to the owner
    and admins only. The verdict (pacs.verdict) is recomputed over all its jobs."""

    __tablename__ = "study"
    __table_args__ = (UniqueConstraint("owner", "study_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    peer_id: Mapped[int | None] = mapped_column(
        ForeignKey("dicom_peer.id", ondelete="SET NULL"), index=True
    )
    results_to_peer_id: Mapped[int | None] = mapped_column(
        ForeignKey("dicom_peer.id", ondelete="SET NULL")
    )
    source: Mapped[str] = mapped_column(String(80))  # dicom:<AE> | stow | pull:<name>
    patient_id: Mapped[str | None] = mapped_column(String(64))
    accession: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[str | None] = mapped_column(String(8))
    modalities: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="receiving", index=True)
    instances: Mapped[int] = mapped_column(Integer, default=0)
    not_screened: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    score: Mapped[float | None] = mapped_column(Float, index=True)
    label: Mapped[str | None] = mapped_column(String(16))
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    failed: Mapped[int] = mapped_column(Integer, default=0)  # images that could not be scored
    verdict: Mapped[dict | None] = mapped_column(JSON)
    verdict_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StudyInstance(Base):
    """One received SOP instance: its raw Part-10 file (content-hashed), where the
    router sent it ("ct", "xray") or why it is not screened, and the job that screened
    it. Its scans are Scan(job_id, position) for position in
    [first_position, first_position + frames)."""

    __tablename__ = "study_instance"
    __table_args__ = (UniqueConstraint("study_id", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    series_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    route: Mapped[str | None] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    stored_path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"))
    first_position: Mapped[int | None] = mapped_column(Integer)
    frames: Mapped[int | None] = mapped_column(Integer)


class StudyJob(Base):
    """Every job made of a study: the first once it settled, then follow-ups for
    instances that came later."""

    __tablename__ = "study_job"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), unique=True)
    modality: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- DICOM out (issue #19): result objects sent back to a PACS, per study job ----------

DELIVERY_STATUSES = ("pending", "sent", "failed")
DELIVERY_PROTOCOLS = ("dimse", "stow")


class DicomDelivery(Base):
    """The results of one job of a study (an SR and heat-map Secondary Captures) sent
    back as DICOM: to whom, how, and how it went. `pending` until the destination took
    every object (`sent`) or the retries ran out (`failed`, with the reason); a resend
    sets it back to pending. `sop_instance_uids` are the objects' derived UIDs, the same
    on every send, so a PACS replaces rather than duplicates them."""

    __tablename__ = "dicom_delivery"
    __table_args__ = (UniqueConstraint("study_id", "job_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    protocol: Mapped[str] = mapped_column(String(8))
    peer_id: Mapped[int | None] = mapped_column(ForeignKey("dicom_peer.id", ondelete="SET NULL"))
    dicomweb_source_id: Mapped[int | None] = mapped_column(
        ForeignKey("dicomweb_source.id", ondelete="SET NULL")
    )
    destination: Mapped[str] = mapped_column(String(300))  # as it was described when sent
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(64))
    objects: Mapped[int] = mapped_column(Integer, default=0)
    sop_instance_uids: Mapped[list] = mapped_column(JSON, default=list)
    # Raised by every resend: a retry still scheduled from an earlier send sees that it
    # is stale and stops, so one send at a time writes the row.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    requested_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
