"""Entry point for `celery -A worker.app worker|beat`."""

from worker.celery_app import create_celery

app = create_celery()
