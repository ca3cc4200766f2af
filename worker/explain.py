"""Grad-CAM pictures, made in the worker when someone opens a result (models.gradcam).

The picture is the heat map over the original image at its own size, stored under the
data dir by model version and content hash, so it is computed once per image and
version whoever asks. A version trained on lung fields explains the crop it scores, and
its map is put back into the whole image (models.lung.field).

The explainer (the Keras model and its traced gradient pass) is prepared in the
background of the worker process (worker.warmup), outside the task's time limit: a task
that finds it still loading waits a little, then goes back to the queue."""

from __future__ import annotations

import os

from celery import current_app, shared_task
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from db.models import ModelVersion, Result, Scan
from db.session import session_scope
from scanq.settings import get_settings
from worker.celery_app import EXPLAIN_SCAN

# How long a task waits for its explainer before going back to the queue.
EXPLAINER_WAIT_SECONDS = 5.0


@shared_task(name=EXPLAIN_SCAN, autoretry_for=(OperationalError,), retry_backoff=True,
             max_retries=10)  # fmt: skip
def explain_scan(scan_id: int) -> str:
    from models.gradcam import overlay
    from models.preprocess import resize_square
    from models.readers import decode_grayscale
    from worker import warmup

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        row = session.execute(
            select(Scan.stored_path, Scan.sha256, ModelVersion)
            .join(Result, Result.scan_id == Scan.id)
            .join(ModelVersion, ModelVersion.id == Result.model_version_id)
            .where(Scan.id == scan_id, Result.error.is_(None))
        ).first()
        if row is None:
            return "not scored"
        stored, sha, version = row
        version_args = (version.id, version.path, version.temperature, version.backbone)
        is_xray = version.modality == "xray"
    out = settings.heatmap_path(version_args[0], sha)
    if out.exists():
        return "exists"
    wait = min(EXPLAINER_WAIT_SECONDS, settings.batch_time_limit / 4)
    explain = warmup.ready(settings, version_args, wait=wait, what="explainer")
    if explain is None:  # not a failure: sent again, no retry is used up
        current_app.send_task(EXPLAIN_SCAN, args=[scan_id], countdown=1)
        return "left for later: the explainer is loading"
    predictor = warmup.ready(settings, version_args, wait=0)  # ready: the explainer has it
    gray = decode_grayscale(settings.data_dir / stored)
    _probs, cams = explain(resize_square(gray, predictor.input_size)[None])
    cam = cams[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.png")
    picture = overlay(gray, cam)
    if is_xray:  # where the lungs were taken to be, for lung_heat_share (models.lung)
        from models.lung.outline import with_lung_outline

        picture = with_lung_outline(picture, gray)
    picture.save(tmp)
    os.replace(tmp, out)  # readers see a whole file or none
    return "made"
