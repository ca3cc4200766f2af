"""Prometheus metrics at `/metrics` (prometheus_client), for a scraper holding an API
token like any client.

Two kinds. What the web process itself does (requests by endpoint and status, their
latency) is counted in each gunicorn worker and summed across workers through
prometheus_client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR is set by
web.gunicorn_conf before the workers fork. Everything about the work (jobs by status,
images scored, failed and flagged, batch queue and scoring latency, confirmed labels,
DICOM deliveries pending, the drift alert) is counted from SQL at scrape time, so it is
right whichever process or machine did the work, and survives restarts. Celery's
workers are Flower's to report (its own /metrics).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import timedelta

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import case, func, select

from db import models as tables
from db.models import Batch, Job, Result, Review
from web.http import db_session

log = logging.getLogger(__name__)
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
OOD_SHARE_WINDOW_S = 86400

REQUESTS = Counter(
    "scanq_http_requests",
    "HTTP requests answered by the web process",
    ["method", "endpoint", "status"],
)
REQUEST_SECONDS = Histogram(
    "scanq_http_request_seconds", "Time to answer an HTTP request", ["endpoint"]
)


def init_metrics(app: Flask) -> None:
    """Count every request and serve /metrics."""

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response):
        endpoint = request.endpoint or "unmatched"
        REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        started = getattr(g, "metrics_started", None)
        if started is not None:
            REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        return response

    app.add_url_rule("/metrics", "metrics", metrics_view)


def metrics_view() -> Response:
    """Every gunicorn worker's counts summed (multiprocess mode), or this process's own
    (one process: the development server, tests), and the SQL counts."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(SqlCollector())
    else:
        registry = REGISTRY
        if not _sql_registered:
            _register_sql_once()
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


_sql_registered = False


def _register_sql_once() -> None:
    global _sql_registered
    REGISTRY.register(SqlCollector())
    _sql_registered = True


def _histogram(name: str, doc: str, values, labels: dict[str, str]) -> HistogramMetricFamily:
    """A histogram family from one SQL row of per-bucket counts, the count and the sum."""
    *per_bucket, count, total = values
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    cumulative = [(str(b), int(c or 0)) for b, c in zip(LATENCY_BUCKETS_S, per_bucket, strict=True)]
    cumulative.append(("+Inf", int(count or 0)))
    family.add_metric(list(labels.values()), cumulative, float(total or 0.0))
    return family


def _bucket_counts(column) -> list:
    """count(column <= b) per bucket, then the count and the sum, in one SELECT."""
    return [func.sum(case((column <= b, 1), else_=0)) for b in LATENCY_BUCKETS_S] + [
        func.count(column),
        func.sum(column),
    ]


class SqlCollector:
    """Reads the work's counts from SQL when scraped; one failing family (a table a
    migration has not made yet) is logged and left out, never the whole scrape."""

    def collect(self) -> Iterator:
        with db_session() as session:
            for part in (
                self._jobs,
                self._images,
                self._latency,
                self._labels,
                self._deliveries,
                self._drift,
            ):
                try:
                    yield from part(session)
                except Exception:
                    log.exception("metrics: %s", part.__name__)
                    session.rollback()

    def _jobs(self, session):
        family = GaugeMetricFamily(
            "scanq_jobs", "Jobs by kind and status", labels=["kind", "status"]
        )
        counts = {
            (k, s): n
            for k, s, n in session.execute(
                select(Job.kind, Job.status, func.count(Job.id)).group_by(Job.kind, Job.status)
            )
        }
        for kind in tables.JOB_KINDS:
            for status in tables.JOB_STATUSES:
                family.add_metric([kind, status], counts.get((kind, status), 0))
        yield family

    def _images(self, session):
        scored = CounterMetricFamily("scanq_images_scored", "Images scored", labels=["modality"])
        failed = CounterMetricFamily(
            "scanq_images_failed", "Images that could not be scored", labels=["modality"]
        )
        flagged = CounterMetricFamily(
            "scanq_images_flagged_ood",
            "Scored images flagged out of distribution",
            labels=["modality"],
        )
        rows = session.execute(
            select(
                Job.modality,
                func.sum(case((Result.error.is_(None), 1), else_=0)),
                func.sum(case((Result.error.is_not(None), 1), else_=0)),
                func.sum(case((Result.out_of_distribution.is_(True), 1), else_=0)),
            )
            .join(Job, Job.id == Result.job_id)
            .group_by(Job.modality)
        )
        by_modality = {m: (s, f, o) for m, s, f, o in rows}
        share = GaugeMetricFamily(
            "scanq_ood_share",
            "Share of the last day's scored images flagged out of distribution",
            labels=["modality"],
        )
        since = tables.utcnow() - timedelta(seconds=OOD_SHARE_WINDOW_S)
        recent = dict(
            (
                (m, (n, o))
                for m, n, o in session.execute(
                    select(
                        Job.modality,
                        func.count(Result.id),
                        func.sum(case((Result.out_of_distribution.is_(True), 1), else_=0)),
                    )
                    .join(Job, Job.id == Result.job_id)
                    .where(Result.error.is_(None), Result.created_at >= since)
                    .group_by(Job.modality)
                )
            )
        )
        for modality in tables.MODALITIES:
            s, f, o = by_modality.get(modality, (0, 0, 0))
            scored.add_metric([modality], int(s or 0))
            failed.add_metric([modality], int(f or 0))
            flagged.add_metric([modality], int(o or 0))
            n, o24 = recent.get(modality, (0, 0))
            share.add_metric([modality], (o24 or 0) / n if n else 0.0)
        yield from (scored, failed, flagged, share)

    def _latency(self, session):
        stats = Batch.stats
        queue_ms = stats["queue_ms"].as_float()
        work_ms = (
            stats["decode_ms"].as_float()
            + stats["model_ms"].as_float()
            + stats["write_ms"].as_float()
        )
        for name, doc, column in (
            ("scanq_batch_queue_seconds", "Time a scoring batch waited in the queue", queue_ms),
            (
                "scanq_batch_scoring_seconds",
                "Time a worker spent decoding, scoring and storing a batch",
                work_ms,
            ),
        ):
            seconds = column / 1000.0
            row = session.execute(
                select(*_bucket_counts(seconds)).where(
                    Batch.status == "done", Batch.stats.is_not(None)
                )
            ).one()
            yield _histogram(name, doc, row, {})

    def _labels(self, session):
        family = GaugeMetricFamily(
            "scanq_confirmed_labels",
            "Reviewer-confirmed labels, and whether the model agreed",
            labels=["modality", "agrees_with_model"],
        )
        rows = session.execute(
            select(
                Review.modality, Review.label == Review.model_label, func.count(Review.id)
            ).group_by(Review.modality, Review.label == Review.model_label)
        )
        counts = {(m, bool(a)): n for m, a, n in rows}
        for modality in tables.MODALITIES:
            for agrees in (True, False):
                family.add_metric(
                    [modality, str(agrees).lower()], counts.get((modality, agrees), 0)
                )
        yield family

    def _deliveries(self, session):
        delivery = getattr(tables, "DicomDelivery", None)
        if delivery is None:
            return
        pending = session.scalar(
            select(func.count(delivery.id)).where(delivery.status == "pending")
        )
        yield GaugeMetricFamily(
            "scanq_dicom_deliveries_pending",
            "DICOM result deliveries not yet taken by their destination",
            value=int(pending or 0),
        )

    def _drift(self, session):
        from web.monitoring import cached_drift_alerts

        family = GaugeMetricFamily(
            "scanq_drift_alert",
            "1 when the active model's scans drifted in the last week (monitoring page)",
            labels=["modality", "model_version"],
        )
        for a in cached_drift_alerts():
            family.add_metric([a["modality"], str(a["model_version"])], int(a["alert"]))
        yield family
