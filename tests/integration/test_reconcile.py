"""SQL is the source of truth: batches whose Celery message never reached Redis (the
broker was down at submit time) are re-sent by the reconciler and the job finishes."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from db.jobs import IncomingScan, create_inference_job
from db.models import Batch
from db.registry import active_version
from db.session import session_scope
from scanq.settings import load_settings
from scanq.storage import store_bytes
from tests.conftest import sample_images
from worker.celery_app import RECONCILE, create_celery


def test_lost_batches_are_requeued_from_sql(stack, shared_data):
    url = f"sqlite:///{stack.data_dir / 'scanq.sqlite3'}"
    scans = []
    for p in sample_images(shared_data, "xray", "non_covid", 10):
        digest, rel = store_bytes(stack.data_dir, p.read_bytes())
        scans.append(IncomingScan(p.name, digest, rel, p.stat().st_size, 1, 1))
    with session_scope(url) as s:
        version = active_version(s, "xray")
        job, batch_ids = create_inference_job(s, "xray", version.id, scans, batch_size=4)
        job_id = job.id
    assert len(batch_ids) == 3  # nothing was sent: as if Redis had been down

    celery = create_celery(replace(load_settings(), redis_url=stack.env["REDIS_URL"]))
    celery.send_task(RECONCILE, kwargs={"stale_after_seconds": 0})
    job = stack.wait_job(job_id, timeout=180)
    assert job["status"] == "succeeded"
    assert (job["done"], job["failed"]) == (10, 0)
    with session_scope(url) as s:
        statuses = set(s.scalars(select(Batch.status).where(Batch.job_id == job_id)))
    assert statuses == {"done"}


def test_batch_of_a_worker_that_never_came_back_is_requeued(stack, shared_data):
    """A batch left `running` long ago by a worker that vanished (its message gone with
    it) is sent again, and the job does not stay running forever."""
    from datetime import timedelta

    from db.models import Job, utcnow

    url = f"sqlite:///{stack.data_dir / 'scanq.sqlite3'}"
    scans = []
    for p in sample_images(shared_data, "ct", "non_covid", 6):
        digest, rel = store_bytes(stack.data_dir, p.read_bytes())
        scans.append(IncomingScan(p.name, digest, rel, p.stat().st_size, 1, 1))
    long_ago = utcnow() - timedelta(hours=3)
    with session_scope(url) as s:
        job, (batch_id,) = create_inference_job(
            s, "ct", active_version(s, "ct").id, scans, batch_size=8
        )
        job_id = job.id
        s.execute(Batch.__table__.update().where(Batch.id == batch_id).values(
            status="running", attempts=1, enqueued_at=long_ago, started_at=long_ago))  # fmt: skip
        s.execute(Job.__table__.update().where(Job.id == job_id).values(status="running"))

    celery = create_celery(replace(load_settings(), redis_url=stack.env["REDIS_URL"]))
    celery.send_task(RECONCILE, kwargs={"stale_after_seconds": 3600})  # older than an hour
    job = stack.wait_job(job_id, timeout=180)
    assert job["status"] == "succeeded" and (job["done"], job["failed"]) == (6, 0)
    with session_scope(url) as s:
        assert s.get(Batch, batch_id).attempts == 2
