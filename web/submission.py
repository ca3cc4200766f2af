"""What a submission does, shared by the JSON API and the upload page: check the
request, then store the files and queue their batches as they arrive (web.job_upload)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from db.accounts import audit
from db.models import MODALITIES, Job, ModelVersion
from db.registry import active_version
from web.http import ApiError, db_session, settings
from web.ingest import Limits, UploadError, ingest_chunks
from web.job_upload import JobUpload, UploadCancelled
from web.multipart import MalformedUpload


def resolve_model_version(session: Session, modality: str, requested: str | None) -> ModelVersion:
    if modality not in MODALITIES:
        raise ApiError(400, "bad_modality", f"modality must be one of {', '.join(MODALITIES)}")
    if requested:
        try:
            version = session.get(ModelVersion, int(requested))
        except ValueError:
            raise ApiError(400, "bad_model_version", "model_version must be an integer") from None
        if version is None:
            raise ApiError(404, "model_version_not_found", f"no model version {requested}")
        if version.modality != modality:
            raise ApiError(
                400,
                "model_modality_mismatch",
                f"model version {version.id} is for {version.modality}, not {modality}",
            )
        return version
    version = active_version(session, modality)
    if version is None:
        raise ApiError(409, "no_active_model", f"no active model for {modality}")
    return version


NO_FILES = "send one or more images or .zip archives as `files`"


def submit_inference_job(
    uploads: Iterable[tuple[str, bytes]],
    modality: str,
    model_version: str | None = None,
    owner: str | None = None,
    skip_out_of_distribution: bool = False,
) -> Job:
    """Store and queue the files as they come (`uploads` may be a stream: see
    web.multipart); the job's first batches are scored while later files arrive. A
    request refused part-way leaves its job failed with the reason.
    `skip_out_of_distribution`: images the model's out-of-distribution check flags
    get no probability (by default they keep it, with a warning)."""
    cfg = settings()
    if isinstance(uploads, list) and not uploads:
        raise ApiError(400, "no_files", NO_FILES)
    with db_session() as session:
        version = resolve_model_version(session, modality, model_version)
    limits = Limits(cfg.max_files_per_job, cfg.max_archive_ratio, cfg.max_upload_bytes)
    options = {"skip_out_of_distribution": skip_out_of_distribution}
    upload = JobUpload(cfg.database_url, modality, version.id, cfg.batch_size, owner, options)
    try:
        for scans in ingest_chunks(uploads, cfg.data_dir, limits, modality, cfg.batch_size):
            upload.add(scans)
        job = upload.close()
    except UploadCancelled as exc:
        # Read the rest without storing it, so the client gets this answer rather than
        # a connection closed under its upload.
        for _rest in uploads:
            pass
        raise ApiError(409, "job_cancelled", str(exc)) from None
    except UploadError as exc:
        upload.abort(f"upload refused: {exc}")
        raise ApiError(400, "too_many_files", str(exc)) from None
    except MalformedUpload as exc:
        upload.abort(f"upload refused: {exc}")
        raise ApiError(400, "bad_upload", str(exc)) from None
    except HTTPException as exc:  # 413 (too many parts or bytes), 400 (client went away)
        upload.abort(f"upload stopped part-way: {exc.description}")
        raise
    except BaseException as exc:
        upload.abort(f"upload interrupted: {type(exc).__name__}: {exc}")
        raise
    if upload.total == 0:
        raise ApiError(400, "no_files", "the upload holds no image files")
    if job is None:
        detail = "; ".join(f"{s.filename}: {s.error}" for s in upload.rejected[:5])
        raise ApiError(422, "no_usable_images", f"no file could be used: {detail}")
    with db_session() as session:
        details = {"modality": modality, "files": upload.total, "model_version": version.id}
        audit(session, owner, "submit_job", f"job:{job.id}", details)
    return job
