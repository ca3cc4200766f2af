"""The Celery app factory, shared by workers, beat and the web process (which only
sends tasks by name). Delivery is at-least-once: late acks, prefetch of one and a
visibility timeout above the longest task; tasks are idempotent against SQL."""

from __future__ import annotations

from celery import Celery

from scanq.settings import Settings, get_settings

INFERENCE_QUEUE = "inference"
TRAINING_QUEUE = "training"
# DICOM out (issue #19, pacs.delivery_tasks): results sent back to a PACS, on a queue of
# their own so an unreachable PACS never holds up scoring; no TensorFlow in them.
DICOM_OUT_QUEUE = "dicom_out"
DELIVER_STUDY = "scanq.deliver_study"
SEND_DELIVERY = "scanq.send_delivery"
DELIVERY_SWEEP = "scanq.delivery_sweep"
SCORE_BATCH = "scanq.score_batch"
TRAIN_MODEL = "scanq.train_model"
RECONCILE = "scanq.reconcile"
RUN_SCHEDULE = "scanq.run_schedule"
EXPLAIN_SCAN = "scanq.explain_scan"
# Site monitoring (#21, worker.drift): score a model version's drift reference images.
DRIFT_REFERENCE = "scanq.drift_reference"
# DICOM in (issue #19, pacs.tasks): studies that stopped growing become jobs; pulls.
SETTLE_STUDIES = "scanq.settle_studies"
PULL_STUDIES = "scanq.pull_studies"
# After the soft limit the task ends its own process (worker.tasks); the hard limit is
# the backstop for a hang that Python's signal handler cannot interrupt.
HARD_LIMIT_GRACE_S = 60


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery(
        "scanq",
        include=[
            "worker.tasks",
            "worker.training",
            "worker.retraining",
            "worker.explain",
            "worker.drift",
            "worker.signals",
            "pacs.delivery_tasks",
            "pacs.tasks",
        ],
    )
    broker = settings.resolved_redis_url()
    app.conf.update(
        broker_url=broker,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=INFERENCE_QUEUE,
        task_routes={
            SCORE_BATCH: {"queue": INFERENCE_QUEUE},
            RECONCILE: {"queue": INFERENCE_QUEUE},
            RUN_SCHEDULE: {"queue": INFERENCE_QUEUE},
            EXPLAIN_SCAN: {"queue": INFERENCE_QUEUE},
            DRIFT_REFERENCE: {"queue": INFERENCE_QUEUE},
            TRAIN_MODEL: {"queue": TRAINING_QUEUE},
            DELIVER_STUDY: {"queue": DICOM_OUT_QUEUE},
            SEND_DELIVERY: {"queue": DICOM_OUT_QUEUE},
            DELIVERY_SWEEP: {"queue": DICOM_OUT_QUEUE},
            SETTLE_STUDIES: {"queue": INFERENCE_QUEUE},
            PULL_STUDIES: {"queue": INFERENCE_QUEUE},
        },
        task_annotations={
            name: {
                "soft_time_limit": settings.batch_time_limit,
                "time_limit": settings.batch_time_limit + HARD_LIMIT_GRACE_S,
            }
            for name in (SCORE_BATCH, EXPLAIN_SCAN)  # a Grad-CAM reads a scan too
        },
        task_serializer="json",
        accept_content=["json"],
        # A guard against slow leaks in long-lived children (kB); see bench/ for a
        # measurement of worker memory over many batches.
        worker_max_memory_per_child=6_000_000,
        worker_hijack_root_logger=False,
        beat_schedule={
            "reconcile": {"task": RECONCILE, "schedule": 60.0},
            # Results whose message was lost are sent from SQL (pacs.delivery_tasks).
            "deliveries": {"task": DELIVERY_SWEEP, "schedule": 60.0, "options": {"expires": 120}},
            # A study is screened once stable for SCANQ_STUDY_SETTLE (pacs.settle).
            "settle-studies": {
                "task": SETTLE_STUDIES,
                "schedule": settings.study_sweep_seconds,
                # A sweep still queued when the next is due is dropped, not piled up.
                "options": {"expires": settings.study_sweep_seconds * 2},
            },
        },
        # Beat keeps its entries in Redis (celery-redbeat, see worker/beat.py): schedules
        # made through the web are picked up without a restart, and a lock lets one beat
        # of several fire. It looks for new entries at least every max_loop_interval
        # seconds; a dead beat's lock lapses after five of those.
        beat_scheduler="redbeat.RedBeatScheduler",
        beat_max_loop_interval=settings.beat_interval,
        redbeat_redis_url=broker,
        redbeat_redis_options={},
        redbeat_key_prefix="scanq:redbeat:",
        redbeat_lock_timeout=settings.beat_interval * 5,
    )
    return app
