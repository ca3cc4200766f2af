"""Celery tasks of the DICOM side: the settle sweep (fired by beat) and pulls."""

from __future__ import annotations

from celery import current_app, shared_task
from sqlalchemy.exc import OperationalError

from scanq.settings import get_settings
from worker.celery_app import PULL_STUDIES, SETTLE_STUDIES


def _send(name: str, args: list) -> None:
    current_app.send_task(name, args=args)


@shared_task(name=SETTLE_STUDIES, autoretry_for=(OperationalError,), max_retries=3)
def settle_studies() -> dict:
    from pacs.settle import sweep

    return sweep(get_settings(), _send)


@shared_task(
    name=PULL_STUDIES, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5
)
def pull_studies(
    pull_id: str, source: str, query: dict, owner: str, results_to_peer_id: int | None = None
) -> dict:
    from pacs.pull import run_pull

    return run_pull(get_settings(), pull_id, source, query, owner, results_to_peer_id)
