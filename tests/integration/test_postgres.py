"""The production layout's database: the whole stack (gunicorn, a Celery worker, Redis)
on PostgreSQL, in a database of its own, reached through a proxy that the test can cut
to take the server away mid-job as a restart or a network drop would."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from db.models import Batch, Result, Scan
from db.session import get_engine, session_scope
from scanq import DISCLAIMER
from tests.conftest import ROOT, Stack, free_port, postgres_url, sample_images
from tests.tcp_proxy import CuttableProxy


@pytest.fixture(scope="module")
def pg(tmp_path_factory, redis_url):
    """(stack, proxy, direct URL): a fresh database, the stack connected through the
    proxy, and the URL the test itself uses, which bypasses the proxy."""
    admin = make_url(postgres_url())
    name = f"scanq_it_{uuid.uuid4().hex[:12]}"
    with get_engine(admin.render_as_string(hide_password=False)).connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text(f'CREATE DATABASE "{name}"')
        )
    direct = admin.set(database=name)
    proxy = CuttableProxy(direct.host or "127.0.0.1", direct.port or 5432)
    through = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    stack = Stack(tmp_path_factory.mktemp("pg-stack"), redis_url, free_port(), through)
    try:
        stack.start()
        yield stack, proxy, direct.render_as_string(hide_password=False)
    finally:
        stack.stop()
        proxy.close()
        with get_engine(admin.render_as_string(hide_password=False)).connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            )


def test_bulk_job_end_to_end_on_postgresql(pg, shared_data):
    stack, _proxy, db = pg
    images = sample_images(shared_data, "ct", "covid", 6) + sample_images(
        shared_data, "ct", "non_covid", 6
    )
    files = [("files", (p.name, p.read_bytes())) for p in images]
    files.append(("files", ("notes.png", b"not a scan")))
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", files=files, data={"modality": "ct"})
    assert resp.status_code == 202, resp.text
    job = stack.wait_job(resp.json()["id"])
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 12, 1), job

    with session_scope(db) as s:
        assert s.bind.dialect.name == "postgresql"
        n_scans = s.scalar(select(func.count(Scan.id)).where(Scan.job_id == job["id"]))
        n_results = s.scalar(select(func.count(Result.id)).where(Result.job_id == job["id"]))
    assert n_scans == n_results == 13

    body = stack.http.get(f"{stack.url}/api/v1/jobs/{job['id']}/results.csv").text
    assert body.startswith(f"# {DISCLAIMER}\n")
    rows = list(csv.DictReader(io.StringIO(body.split("\n", 1)[1])))
    assert sorted(r["filename"] for r in rows) == sorted([p.name for p in images] + ["notes.png"])


def test_database_unreachable_mid_job_delays_but_loses_nothing(pg, shared_data):
    """Every pooled connection hangs up and new ones are refused for 15 s while the
    worker has a job's batches: its writes fail, the task retries with backoff, the
    API answers 503 with Retry-After (which `scanq status` waits out), and once the
    server is back every scan has exactly one result."""
    from dataclasses import replace

    from db.jobs import IncomingScan, create_inference_job
    from db.registry import active_version
    from scanq.settings import load_settings
    from scanq.storage import store_bytes
    from worker.celery_app import SCORE_BATCH, create_celery

    stack, proxy, db = pg
    scans = []
    for p in sample_images(shared_data, "xray", "covid", 10):
        digest, rel = store_bytes(stack.data_dir, p.read_bytes())
        scans.append(IncomingScan(p.name, digest, rel, p.stat().st_size, 1, 1))
    with session_scope(db) as s:
        job, batch_ids = create_inference_job(s, "xray", active_version(s, "xray").id, scans, 8)
        job_id = job.id
    celery = create_celery(replace(load_settings(), redis_url=stack.env["REDIS_URL"]))

    proxy.cut()
    try:
        for batch_id in batch_ids:
            celery.send_task(SCORE_BATCH, args=[batch_id])
        time.sleep(5)
        down = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}", timeout=30)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "database_unavailable"
        assert int(down.headers["Retry-After"]) > 0
        assert stack.http.get(f"{stack.url}/healthz").status_code == 503
        status = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "status", job_id],
            env=stack.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(10)
        assert status.poll() is None  # still waiting for the database, not failed
        with session_scope(db) as s:  # nothing was written while the server was away
            assert s.scalar(select(func.count(Result.id)).where(Result.job_id == job_id)) == 0
    finally:
        proxy.restore()
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    assert json.loads(out)["id"] == job_id
    job = stack.wait_job(job_id, timeout=240)
    assert job["status"] == "succeeded" and job["done"] == 10, stack.log("worker")
    with session_scope(db) as s:
        per_scan = s.execute(
            select(Result.scan_id, func.count()).where(Result.job_id == job_id)
            .group_by(Result.scan_id)
        ).all()  # fmt: skip
        statuses = set(s.scalars(select(Batch.status).where(Batch.job_id == job_id)))
    assert len(per_scan) == 10 and all(n == 1 for _scan, n in per_scan)
    assert statuses == {"done"}
    assert "Retry in" in stack.log("worker")
