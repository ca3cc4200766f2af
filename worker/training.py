"""The training task: one run of `models.train` on a stored labelled set, ending in a
new model version in the registry.

Unlike a scoring batch, a run is acknowledged when it starts (`acks_late=False`): a
run of an hour must never start again because its message was redelivered. If its
worker dies, the reconciler sees the heartbeat stop and fails the job with a reason;
the user submits it again. Progress, heartbeat and cancellation go through SQL.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from celery import shared_task

from db.registry import register_version
from db.schedules import finish_run
from db.session import session_scope
from db.training_jobs import (
    claim_training_job,
    finish_training_job,
    heartbeat,
    record_epoch,
    set_stage,
)
from scanq.settings import Settings, get_settings
from worker.celery_app import TRAIN_MODEL

log = logging.getLogger(__name__)


def dataset_path(settings: Settings, stored: str) -> Path:
    """Training sets are stored relative to the data dir unless they are server folders."""
    path = Path(stored)
    return path if path.is_absolute() else settings.data_dir / path


@shared_task(name=TRAIN_MODEL, acks_late=False, reject_on_worker_lost=False)
def train_model(job_id: str) -> str:
    settings = get_settings()
    url = settings.database_url
    with session_scope(url) as session:
        job = claim_training_job(session, job_id)
        if job is None:
            return "skipped"
        modality, options = job.modality, dict(job.options)
    run_id = (options.get("gate") or {}).get("run")
    try:
        outcome = _run(settings, job_id, modality, options)
    except Exception as exc:  # any failure ends the job with its reason, never silently
        log.exception("training job %s failed", job_id)
        reason = f"{type(exc).__name__}: {exc}"
        with session_scope(url) as session:
            finish_training_job(session, job_id, "failed", error=reason)
            if run_id:
                finish_run(session, run_id, "failed", f"training failed: {reason}")
        return "failed"
    if run_id and outcome == "cancelled":
        with session_scope(url) as session:
            finish_run(session, run_id, "failed", "the training job was cancelled")
    return outcome


def _run(settings: Settings, job_id: str, modality: str, options: dict) -> str:
    if options.get("recalibrate"):  # #21: refits stored scores, no images, no TensorFlow
        from worker.recalibration import run_recalibration

        return run_recalibration(settings, job_id, modality, options)
    from worker import runtime

    runtime.configure_tensorflow()
    from models.dataset import load_examples
    from models.train import TrainConfig, train
    from models.version import save_version

    url = settings.database_url
    cancelled = False

    def progress(epoch: int, logs: dict) -> None:
        nonlocal cancelled
        with session_scope(url) as session:
            cancelled = record_epoch(session, job_id, epoch, logs) != "running"

    def should_stop() -> bool:
        nonlocal cancelled
        with session_scope(url) as session:
            cancelled = cancelled or heartbeat(session, job_id) != "running"
        return cancelled

    with session_scope(url) as session:
        set_stage(session, job_id, "loading images")
    examples = load_examples(dataset_path(settings, options["dataset"]), modality)
    for extra in options.get("extra_datasets", []):  # a schedule's base data
        examples += load_examples(dataset_path(settings, extra), modality)
    cfg = TrainConfig(modality=modality, **options["config"])
    with session_scope(url) as session:
        set_stage(session, job_id, "training")
    result = train(cfg, examples, progress=progress, should_stop=should_stop)
    if cancelled or should_stop():
        return "cancelled"
    with session_scope(url) as session:
        set_stage(session, job_id, "saving")
    rel = f"model_versions/{job_id}"
    out = settings.version_dir(rel)
    save_version(result, out, command=f"training job {job_id}: {options['config']}")
    with session_scope(url) as session:
        version = register_version(
            session,
            result.card,
            rel,
            activate=bool(options.get("activate")),
            training_job_id=job_id,
        )
        if not finish_training_job(session, job_id, "succeeded", version.id):
            session.rollback()  # cancelled while saving: no version from a cancelled run
            shutil.rmtree(out, ignore_errors=True)
            return "cancelled"
        version_id = version.id
    if options.get("gate"):
        with session_scope(url) as session:
            set_stage(session, job_id, "comparing with the champion")
        _gate(settings, options["gate"], version_id, result)
    return "succeeded"


def _gate(settings: Settings, gate: dict, challenger_id: int, result) -> None:
    """Score champion and challenger on the challenger's held-back patients; promote
    the challenger only if it is better (models.gate), and record the decision."""
    from db.models import ModelVersion
    from db.registry import activate_version
    from models.gate import comparison_set, decide, evaluate_version

    url = settings.database_url
    with session_scope(url) as session:
        versions = {
            v.id: (settings.version_dir(v.path), v.temperature, v.threshold)
            for v in session.query(ModelVersion).filter(
                ModelVersion.id.in_([challenger_id, gate.get("champion") or -1])
            )
        }
    champion_id = gate.get("champion")
    champion_folder = versions[champion_id][0] if champion_id in versions else None
    held_out, report = comparison_set(champion_folder, result.test_examples)
    report["challenger"] = evaluate_version(*versions[challenger_id], held_out)
    report["champion"] = (
        evaluate_version(*versions[champion_id], held_out) if champion_folder else None
    )
    decision = decide(report["champion"], report["challenger"], float(gate.get("margin", 0)))
    with session_scope(url) as session:
        if decision.promote:
            activate_version(session, challenger_id)
        finish_run(session, gate["run"], "promoted" if decision.promote else "kept",
                   decision.reason, challenger_version_id=challenger_id, report=report)  # fmt: skip
    log.info("gate for version %s: %s", challenger_id, decision.reason)
