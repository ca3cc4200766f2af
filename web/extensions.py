"""Extensions bound in the app factory. The Celery client is created on first use, so
pages that only read SQL work even while Redis is still starting."""

from __future__ import annotations

from celery import Celery
from flask import Flask, current_app

from scanq.settings import Settings
from worker.celery_app import create_celery


def celery_init_app(app: Flask) -> None:
    app.extensions["celery"] = None


def get_celery() -> Celery:
    app = current_app
    if app.extensions.get("celery") is None:
        settings: Settings = app.config["SCANQ_SETTINGS"]
        app.extensions["celery"] = create_celery(settings)
    return app.extensions["celery"]
