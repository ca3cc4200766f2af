"""Training requests, shared by the JSON API and the training form: check every
option, store or locate the labelled set, write the job, then send it to the
`training` queue. As with scoring, the send comes after the commit; a job whose send
failed stays queued in SQL and the reconciler sends it."""

from __future__ import annotations

from collections.abc import Mapping

from db.accounts import audit
from db.models import MODALITIES, Job
from db.training_jobs import create_training_job
from models.recipes import get_recipe
from models.training_options import OptionError, expected_steps, parse_fields
from web.datasets import Dataset, DatasetError, load_dataset, resolve_server_folder, unpack_archive
from web.extensions import get_celery
from web.http import ApiError, boolean_field, db_session, settings
from web.ingest import Limits
from worker.sending import send_training


def parse_training_request(form: Mapping[str, str]) -> tuple[str, dict, bool]:
    """(modality, TrainConfig fields, activate) from form fields, or ApiError. The
    options, their ranges and rules are models.training_options'."""
    modality = (form.get("modality") or "").strip().lower()
    if modality not in MODALITIES:
        raise ApiError(400, "bad_modality", f"modality must be one of {', '.join(MODALITIES)}")
    try:
        config = parse_fields(form, modality=modality)
    except OptionError as exc:
        raise ApiError(400, f"bad_{exc.name}", str(exc)) from None
    return modality, config, boolean_field(form, "activate")


def _dataset(archive: bytes | None, data_path: str | None, modality: str) -> tuple[Dataset, str]:
    cfg = settings()
    if bool(archive) == bool(data_path):
        raise ApiError(400, "no_dataset", "send a .zip as `dataset`, or a server `data_path`")
    try:
        if archive:
            limits = Limits(cfg.max_files_per_job, cfg.max_archive_ratio, cfg.max_upload_bytes)
            dataset = unpack_archive(archive, cfg.datasets_dir, limits)
            return dataset, dataset.path.relative_to(cfg.data_dir).as_posix()
        folder = resolve_server_folder(data_path, [cfg.datasets_dir, *cfg.dataset_roots])
        return load_dataset(folder, modality), str(folder)
    except DatasetError as exc:
        raise ApiError(422, "dataset_unusable", str(exc)) from None


def submit_training_job(
    form: Mapping[str, str], archive: bytes | None, owner: str | None = None
) -> tuple[Job, dict]:
    modality, config, activate = parse_training_request(form)
    if not get_recipe(config["recipe"]).needs_dataset:  # recalibrate (#21): confirmed labels
        from web.recalibration import submit_recalibration

        return submit_recalibration(modality, config, form, owner)
    dataset, stored = _dataset(archive, (form.get("data_path") or "").strip() or None, modality)
    options = {"dataset": stored, "config": config, "activate": activate}
    with db_session() as session:
        job = create_training_job(session, modality, options, expected_steps(config), owner=owner)
        audit(session, owner, "submit_training", f"job:{job.id}", {"config": config})
    send_training(settings().database_url, get_celery().send_task, [job.id])
    return job, dataset.summary()
