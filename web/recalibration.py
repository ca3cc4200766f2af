"""A `recalibrate` training request (models.recalibrate): no labelled set to send, the
site's confirmed labels instead. They are checked here, before anything is queued, so
too few labels or one class only is a 422 that says why; the worker checks again when
it runs (labels can change in between)."""

from __future__ import annotations

from collections.abc import Mapping

from db.accounts import audit
from db.models import Job
from db.registry import active_version
from db.training_jobs import create_training_job
from models.recalibrate import Refused
from models.training_options import expected_steps
from web.extensions import get_celery
from web.http import ApiError, bounded_number, db_session, settings
from worker.recalibration import check_request
from worker.sending import send_training


def submit_recalibration(
    modality: str, config: dict, form: Mapping[str, str], owner: str | None
) -> tuple[Job, dict]:
    """Queue the recalibration of the active version of `modality`; the gate (with
    `margin`, as schedules have) decides whether the new version replaces it."""
    margin = bounded_number(form, "margin", float, 0.0, 0.0, 1.0)
    with db_session() as session:
        parent = active_version(session, modality)
        if parent is None:
            raise ApiError(409, "no_active_model", f"no active model for {modality}")
        try:
            labels = check_request(session, settings(), parent.id)
        except Refused as exc:
            raise ApiError(422, exc.code, str(exc)) from None
        options = {"config": config, "recalibrate": {"parent": parent.id},
                   "gate": {"margin": margin, "champion": parent.id}}  # fmt: skip
        job = create_training_job(session, modality, options, expected_steps(config), owner=owner)
        audit(session, owner, "submit_training", f"job:{job.id}", {"config": config})
        covid = sum(x.label for x in labels)
        summary = {"n": len(labels), "n_covid": covid, "n_non_covid": len(labels) - covid,
                   "n_patients": len({x.patient for x in labels}), "rejected": [],
                   "source": "confirmed labels", "parent": parent.id}  # fmt: skip
    send_training(settings().database_url, get_celery().send_task, [job.id])
    return job, summary
