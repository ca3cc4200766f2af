"""A model version's drift reference, made in a worker the first time monitoring asks
for it (models.drift): scoring the reference images needs TensorFlow, which the web
process never loads.

The images are the version's test split, re-derived from the data it was trained on:
its training job's data sets. A recalibrated version has its parent's weights, so its
reference is the parent's under its own temperature. A version whose data is gone (or
no longer gives its split) gets a reference file that says why, so it is not asked
for again and again; the shipped models carry theirs (`python -m models.drift`).
"""

from __future__ import annotations

import logging

from celery import shared_task
from sqlalchemy.exc import OperationalError

from db.models import Job, ModelVersion
from db.session import session_scope
from scanq.settings import Settings, get_settings
from worker.celery_app import DRIFT_REFERENCE

log = logging.getLogger(__name__)


@shared_task(name=DRIFT_REFERENCE, acks_late=False, autoretry_for=(OperationalError,),
             retry_backoff=True, max_retries=5)  # fmt: skip
def drift_reference(version_id: int) -> str:
    from models import drift

    settings = get_settings()
    try:
        reference = make_reference(settings, version_id)
    except ValueError as exc:  # lasting: the data is gone or no longer gives the split
        reference = {"error": str(exc)}
    if reference is None:
        return "exists"
    with session_scope(settings.database_url) as session:
        folder = settings.version_dir(session.get(ModelVersion, version_id).path)
    drift.save_reference(folder, reference)
    log.info("drift reference of version %s: %s", version_id, reference.get("error", "made"))
    return "error" if "error" in reference else "made"


def make_reference(settings: Settings, version_id: int) -> dict | None:
    """The reference of a version that has none yet (None if it has one)."""
    from models import drift
    from worker.training import dataset_path

    with session_scope(settings.database_url) as session:
        version = session.get(ModelVersion, version_id)
        if version is None:
            raise ValueError(f"no model version {version_id}")
        folder = settings.version_dir(version.path)
        temperature = version.temperature
        job = session.get(Job, version.training_job_id) if version.training_job_id else None
        options = dict(job.options) if job else {}
    if drift.load_reference(folder) is not None:
        return None
    parent = (options.get("recalibrate") or {}).get("parent")
    if parent:
        with session_scope(settings.database_url) as session:
            parent_folder = settings.version_dir(session.get(ModelVersion, parent).path)
        ref = drift.load_reference(parent_folder)
        if ref is None:
            ref = make_reference(settings, parent)
            drift.save_reference(parent_folder, ref)
        if ref.get("error"):
            raise ValueError(f"the parent version has no reference: {ref['error']}")
        return drift.retemper(ref, temperature)
    if not options.get("dataset"):
        raise ValueError(
            "no data to score: this version has no training job whose data sets could give "
            "its test split; run `python -m models.drift --version FOLDER --data DATA`"
        )
    data = [dataset_path(settings, options["dataset"])]
    data += [dataset_path(settings, extra) for extra in options.get("extra_datasets", [])]
    missing = [str(p) for p in data if not p.exists()]
    if missing:
        raise ValueError(f"the data this version was trained on is gone: {', '.join(missing)}")
    from worker import runtime

    runtime.configure_tensorflow()
    return drift.compute_reference(folder, data, temperature)
