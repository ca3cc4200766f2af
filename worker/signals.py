"""Per-process hooks: forked children drop the parent's database connections (pooled
sockets must not be shared across processes), and a child of an inference worker starts
loading the active model versions at once (worker.warmup), outside any batch's time
limit."""

import logging

from celery import current_app
from celery.signals import worker_process_init

from db.session import dispose_engines

log = logging.getLogger(__name__)


@worker_process_init.connect
def _reset_after_fork(**_kwargs) -> None:
    dispose_engines()
    _warm_models()


def _warm_models() -> None:
    """In a background thread: the process is up (and takes work) at once."""
    from worker.celery_app import INFERENCE_QUEUE

    if INFERENCE_QUEUE not in current_app.amqp.queues.consume_from:
        return  # a training or DICOM worker: its tasks load what they need
    from scanq.settings import get_settings
    from worker import warmup

    try:
        warmup.start_active(get_settings())
    except Exception:  # the database is not reachable yet: batches load on demand
        log.exception("could not list the active model versions to load")
