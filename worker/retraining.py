"""Scheduled retraining: what a schedule does when beat fires it.

It claims the firing in SQL (a slot fired twice starts one run), counts the reviewed
labels that are new since its last run, and either records a skipped run or exports
the labelled pool as a training set and queues a training job that ends in the
champion/challenger gate (`worker.training`). Every firing leaves a ScheduleRun row.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
from pathlib import Path

from celery import current_app, shared_task

from db.models import Schedule, utcnow
from db.registry import active_version
from db.reviews import new_labels, pool
from db.schedules import add_run, claim_firing, min_gap_seconds
from db.session import session_scope
from db.training_jobs import create_training_job
from models.training_options import expected_steps
from scanq.settings import Settings, get_settings
from worker.celery_app import RUN_SCHEDULE
from worker.sending import send_training

log = logging.getLogger(__name__)


@shared_task(name=RUN_SCHEDULE, acks_late=False)
def run_schedule(schedule_id: int, rev: str | None = None) -> str:
    """`rev` only marks which version of the schedule redbeat holds (worker.beat)."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        sched = session.get(Schedule, schedule_id)
        if sched is None or not sched.enabled:
            return "gone or paused"
        if not claim_firing(session, schedule_id, min_gap_seconds(sched)):
            return "already fired"
        count, newest = new_labels(session, sched.modality, sched.labels_until)
        if count < sched.min_new_labels:
            add_run(session, schedule_id, "skipped", new_labels=count,
                    reason=f"{count} new confirmed labels; the schedule waits for "
                           f"{sched.min_new_labels}")  # fmt: skip
            return "skipped"
        from worker.recalibration import recalibration_options, refuse_recalibration

        refused = refuse_recalibration(session, settings, sched)  # #21: recipe recalibrate
        if refused:
            add_run(session, schedule_id, "skipped", new_labels=count, reason=refused)
            return "skipped"
        rows = [(scan.stored_path, review.label, review.patient_id or f"scan:{scan.sha256}")
                for scan, review in pool(session, sched.modality) if scan.stored_path]  # fmt: skip
        dataset = export_pool(settings, sched.modality, rows)
        champion = active_version(session, sched.modality)
        options = {
            "dataset": dataset,
            "extra_datasets": [sched.base_data_path] if sched.base_data_path else [],
            "config": dict(sched.config),
            "activate": False,
            "gate": {"margin": sched.margin, "champion": champion.id if champion else None},
        }
        options |= recalibration_options(sched, champion)
        job = create_training_job(session, sched.modality, options, expected_steps(sched.config))
        run = add_run(session, schedule_id, "training", new_labels=count, training_job_id=job.id,
                      champion_version_id=champion.id if champion else None)  # fmt: skip
        job.options = {**options, "gate": {**options["gate"], "run": run.id}}
        sched.labels_until = newest
        job_id = job.id
    send_training(settings.database_url, current_app.send_task, [job_id])
    return f"training {job_id}"


def export_pool(settings: Settings, modality: str, rows: list[tuple[str, str, str]]) -> str:
    """A training set folder (covid/, non_covid/, labels.csv) of reviewed scans, named
    by the hash of its contents so the same pool is exported once. Files are hard links
    to the stored scans where the file system allows. Returns its path relative to the
    data dir."""
    rows = sorted({stored: (stored, label, patient) for stored, label, patient in rows}.values())
    digest = hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
    rel = f"datasets/pool-{modality}-{digest}"
    folder = settings.data_dir / rel
    if (folder / "labels.csv").exists():
        return rel
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    lines = []
    for stored, label, patient in rows:
        src = settings.data_dir / stored
        name = f"{label}/{Path(stored).name}"
        (tmp / label).mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, tmp / name)
        except OSError:
            shutil.copyfile(src, tmp / name)
        lines.append((name, label, patient))
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "label", "patient_id", "source"])
        writer.writerows((n, lab, p, "reviewed") for n, lab, p in lines)
    os.replace(tmp, folder)
    log.info("exported %d reviewed %s scans to %s at %s", len(rows), modality, rel, utcnow())
    return rel
