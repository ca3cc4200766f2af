"""Results back to the PACS: which deliveries a screened study needs, what each one
sends, and one attempt at sending it. The Celery tasks (pacs.delivery_tasks) call these
and own the retrying; nothing here sleeps or loops.

A delivery is one job of a study (the first job, or a follow-up for late instances):
a Comprehensive SR over the images that job screened, with the study verdict as it
stands, plus heat-map Secondary Captures of its highest-scoring images. It goes to the
peer the study is to be answered to (the one that sent it, or the one named by
--results-to) by C-STORE, or, for a study pulled from a DICOMweb source, to that
source by STOW-RS. Every object's SOP Instance UID is derived from the study, the job
and the model version, so a delivery sent twice (a retry after a lost answer, a task
delivered again, a resend) leaves one copy in the PACS.

Patient names and ids are read from the stored instances into the objects; they are
never logged."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.accounts import audit
from db.deliveries import Target, ensure_delivery, reset_for_resend
from db.models import (
    FINAL_STATUSES,
    DicomDelivery,
    DicomPeer,
    DicomwebSource,
    Job,
    ModelVersion,
    Result,
    Scan,
    Study,
    StudyInstance,
    StudyJob,
)
from db.peers import source_credentials
from pacs.results import (
    ImageResult,
    NotScreened,
    StudyHeader,
    StudyResults,
    StudyVerdict,
)
from pacs.transport import Destination, DimseDestination, StowDestination
from scanq.settings import Settings

log = logging.getLogger(__name__)


class NoDestination(Exception):
    """The study has nowhere to send results to; str(e) says why."""


def version_name(version: ModelVersion | None) -> str:
    """How a model version is named in result objects and their UIDs ("xray-v3")."""
    return f"{version.modality}-v{version.id}" if version else "unknown"


# -- where to -------------------------------------------------------------------------


def dimse_target(peer: DicomPeer) -> Target:
    return Target("dimse", f"C-STORE {peer.ae_title}@{peer.host}:{peer.port}", peer_id=peer.id)


def stow_target(source: DicomwebSource) -> Target:
    return Target("stow", f"STOW-RS {source.name} ({source.url})", dicomweb_source_id=source.id)


def default_target(session: Session, study: Study) -> Target:
    """The study's results destination: its results peer (the sender, or --results-to),
    else the DICOMweb source it was pulled from."""
    if study.results_to_peer_id is not None:
        peer = session.get(DicomPeer, study.results_to_peer_id)
        if peer is not None:
            return dimse_target(peer)
    if study.source.startswith("pull:"):
        source = session.scalar(
            select(DicomwebSource).where(DicomwebSource.name == study.source[len("pull:") :])
        )
        if source is not None:
            return stow_target(source)
    raise NoDestination(
        f"study {study.id} came by {study.source.split(':')[0]} with no results peer: "
        "send it to a peer or DICOMweb server by name"
    )


def named_target(session: Session, peer_ae: str | None, dicomweb: str | None) -> Target:
    """A destination chosen by the user: a peer's AE title or a DICOMweb source's name."""
    from db.peers import get_peer_by_ae, get_source

    if peer_ae:
        peer = get_peer_by_ae(session, peer_ae)
        if peer is None:
            raise NoDestination(f"no DICOM peer with AE title {peer_ae!r}")
        return dimse_target(peer)
    if dicomweb:
        source = get_source(session, dicomweb)
        if source is None:
            raise NoDestination(f"no DICOMweb server named {dicomweb!r}")
        return stow_target(source)
    raise NoDestination("name a peer (AE title) or a DICOMweb server")


def destination_of(session: Session, row: DicomDelivery, calling_ae: str) -> Destination:
    """The transport destination of a delivery, read now (a peer's address may change)."""
    if row.protocol == "dimse":
        peer = session.get(DicomPeer, row.peer_id) if row.peer_id else None
        if peer is None:
            raise NoDestination(f"the peer of this delivery ({row.destination}) was removed")
        return DimseDestination(peer.ae_title, peer.host, peer.port, calling_ae)
    source = session.get(DicomwebSource, row.dicomweb_source_id) if row.dicomweb_source_id else None
    if source is None:
        raise NoDestination(f"the DICOMweb server of this delivery ({row.destination}) was removed")
    return StowDestination(source.url, *source_credentials(source))


# -- which deliveries -------------------------------------------------------------------


def _ended_jobs(session: Session, study_id: int) -> list[tuple[Job, ModelVersion | None]]:
    return list(
        session.execute(
            select(Job, ModelVersion)
            .join(StudyJob, StudyJob.job_id == Job.id)
            .outerjoin(ModelVersion, ModelVersion.id == Job.model_version_id)
            .where(StudyJob.study_id == study_id, Job.status.in_(FINAL_STATUSES))
            .order_by(Job.created_at)
        ).all()
    )


def open_deliveries(
    session: Session, study_id: int, user: str | None = None
) -> list[tuple[int, int]]:
    """A pending delivery for every ended job of the study that has none yet; the
    (id, generation) of those created now. NoDestination when the study has none."""
    study = session.get(Study, study_id)
    jobs = _ended_jobs(session, study_id) if study is not None else []
    if not jobs:
        return []
    target = default_target(session, study)
    made = []
    for job, version in jobs:
        row, created = ensure_delivery(session, study_id, job.id, target, version_name(version))
        if created:
            row.requested_by = user
            made.append((row.id, row.generation))
            detail = {"delivery": row.id, "job": job.id, "destination": target.description}
            audit(session, user or study.owner, "dicom_delivery", f"study:{study_id}", detail)
    return made


class NothingToSend(Exception):
    """The study has no ended job, so nothing to send yet."""


def request_send(
    session: Session, study_id: int, user: str, target: Target | None = None
) -> list[tuple[int, int]]:
    """Send a study's results (again): every ended job's delivery made pending at a new
    generation, to `target` if given (else each keeps its destination; a study never
    sent goes to its default one). The (id, generation) pairs to queue."""
    jobs = _ended_jobs(session, study_id)
    if not jobs:
        raise NothingToSend(f"study {study_id} has no ended job to send yet")
    queued = []
    for job, version in jobs:
        existing = session.scalar(
            select(DicomDelivery).where(
                DicomDelivery.study_id == study_id, DicomDelivery.job_id == job.id
            )
        )
        if existing is None:
            chosen = target or default_target(session, session.get(Study, study_id))
            row, _new = ensure_delivery(session, study_id, job.id, chosen, version_name(version))
            row.requested_by = user
            queued.append((row.id, row.generation))
        else:
            queued.append(reset_for_resend(existing, user, target))
    destination = target.description if target else None
    detail = {"deliveries": [d for d, _g in queued], "destination": destination}
    audit(session, user, "dicom_send_requested", f"study:{study_id}", detail)
    return queued


# -- what it sends ----------------------------------------------------------------------


@dataclass
class Heatmap:
    """A heat-map picture a delivery wants: the scan, where its picture is kept, and the
    image it belongs to."""

    scan_id: int
    path: object  # pathlib.Path
    image: ImageResult


@dataclass
class Contents:
    results: StudyResults
    heatmaps: list[Heatmap] = field(default_factory=list)


def _header(settings: Settings, study: Study, instance: StudyInstance | None) -> StudyHeader:
    """The patient and study values, read from a stored instance of the study (falling
    back to what the study row holds)."""
    fallback = StudyHeader(
        study_uid=study.study_uid,
        patient_id=study.patient_id or "",
        accession=study.accession or "",
        study_date=study.study_date or "",
    )
    if instance is None:
        return fallback
    import pydicom

    try:
        ds = pydicom.dcmread(settings.data_dir / instance.stored_path, stop_before_pixels=True)
    except Exception:  # unreadable here: the row's values still file it correctly
        log.warning("study %s: header of a stored instance unreadable", study.id)
        return fallback

    def text(name: str) -> str:
        value = ds.get(name)
        return "" if value is None else str(value)

    charset = ds.get("SpecificCharacterSet")
    if charset is not None and not isinstance(charset, str):
        charset = "\\".join(charset)
    return StudyHeader(
        study_uid=study.study_uid,
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        patient_birth_date=text("PatientBirthDate"),
        patient_sex=text("PatientSex") if text("PatientSex") in ("M", "F", "O") else "",
        accession=text("AccessionNumber"),
        study_id=text("StudyID"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
        referring_physician=text("ReferringPhysicianName"),
        specific_character_set=charset or None,
    )


def _verdict(study: Study) -> StudyVerdict:
    verdict = study.verdict or {}
    score = study.score if study.score is not None else verdict.get("score")
    threshold = None
    for summary in (verdict.get("modalities") or {}).values():
        if summary.get("score") is not None and summary.get("score") == score:
            threshold = summary.get("threshold")
    basis = verdict.get("rule") or ""
    if basis and verdict.get("scored") is not None:
        basis = f"{basis}, over {verdict['scored']} scored images of {verdict.get('images')}"
    return StudyVerdict(
        score=score,
        label=study.label if study.label is not None else verdict.get("label"),
        threshold=threshold,
        flagged=bool(study.flagged),
        basis=basis,
    )


def collect(settings: Settings, session: Session, row: DicomDelivery) -> Contents:
    """The results a delivery sends: every image its job screened (with its frame), the
    study's instances that were not screened, the verdict, and the heat maps wanted."""
    study = session.get(Study, row.study_id)
    job = session.get(Job, row.job_id)
    version = session.get(ModelVersion, job.model_version_id) if job.model_version_id else None
    instances = list(
        session.scalars(
            select(StudyInstance)
            .where(StudyInstance.study_id == study.id, StudyInstance.job_id == job.id)
            .order_by(StudyInstance.first_position)
        )
    )
    scans = session.execute(
        select(Scan, Result, ModelVersion)
        .outerjoin(Result, Result.scan_id == Scan.id)
        .outerjoin(ModelVersion, ModelVersion.id == Result.model_version_id)
        .where(Scan.job_id == job.id)
        .order_by(Scan.position)
    ).all()
    by_position = {scan.position: (scan, result, mv) for scan, result, mv in scans}
    images: list[ImageResult] = []
    scored: list[tuple[float, Scan, ModelVersion, ImageResult]] = []
    for inst in instances:
        if inst.first_position is None:
            continue
        frames = inst.frames or 0
        for k in range(frames):
            scan, result, mv = by_position.get(inst.first_position + k, (None, None, None))
            if scan is None:
                continue
            error = None if result is not None else "not scored"
            if result is not None and result.error:
                error = result.error
            image = ImageResult(
                series_uid=inst.series_uid or "",
                sop_class_uid=inst.sop_class_uid or "",
                sop_instance_uid=inst.sop_instance_uid,
                frame=k + 1 if frames > 1 else None,
                probability=None if error else result.probability,
                label=None if error else result.label,
                threshold=mv.threshold if mv is not None and not error else None,
                out_of_distribution=None if error else result.out_of_distribution,
                ood_reason=None if error else result.ood_reason,
                error=error,
            )
            images.append(image)
            if image.probability is not None and scan.sha256 and mv is not None:
                scored.append((image.probability, scan, mv, image))
    not_screened = tuple(
        NotScreened(
            i.series_uid or "",
            i.sop_class_uid or "",
            i.sop_instance_uid,
            i.reason or "not screened",
        )  # fmt: skip
        for i in session.scalars(
            select(StudyInstance).where(
                StudyInstance.study_id == study.id,
                StudyInstance.route.is_(None),
                StudyInstance.sop_class_uid.is_not(None),
            )
        )
    )
    results = StudyResults(
        header=_header(settings, study, instances[0] if instances else None),
        job_id=job.id,
        model_version=row.model_version or version_name(version),
        verdict=_verdict(study),
        images=tuple(images),
        not_screened=not_screened,
        modality=job.modality,
    )
    scored.sort(key=lambda t: -t[0])
    heatmaps = [
        Heatmap(scan.id, settings.heatmap_path(mv.id, scan.sha256), image)
        for _p, scan, mv, image in scored[: max(0, settings.results_heatmaps)]
    ]
    return Contents(results, heatmaps)


def build_objects(contents: Contents) -> list:
    """The SR and a Secondary Capture per heat map that exists (highdicom datasets)."""
    from PIL import Image

    from pacs.secondary_capture import build_secondary_capture
    from pacs.sr import build_sr

    objects = [build_sr(contents.results)]
    number = 0
    for heat in contents.heatmaps:
        if not heat.path.exists():
            continue
        with Image.open(heat.path) as im:
            picture = np.asarray(im.convert("RGB"), dtype=np.uint8)
        number += 1
        objects.append(build_secondary_capture(contents.results, heat.image, picture, number))
    return objects
