"""Faults injected into the real stack: a worker process killed with SIGKILL in the
middle of a batch. Late acknowledgement and reject-on-worker-lost put the batch back
on the queue, and every image still ends with exactly one result."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

from sqlalchemy import func, select

from db.models import Batch, Result
from db.registry import register_version
from db.session import session_scope
from tests.conftest import sample_images

SLOW = "vgg16"  # untrained: its speed, not its answers, is what this test needs


def _slow_version(stack) -> int:
    from models.backbones import build_classifier

    model, _f, _p = build_classifier(SLOW, 224, weights=None, augment=False)
    rel = f"model_versions/test-{SLOW}"
    (stack.data_dir / rel).mkdir(parents=True, exist_ok=True)
    model.save(stack.data_dir / rel / "model.keras")
    card = {"modality": "xray", "backbone": SLOW, "input_size": 224, "threshold": 0.5}
    with session_scope(_db(stack)) as s:
        return register_version(s, card, rel).id


def _db(stack) -> str:
    return f"sqlite:///{stack.data_dir / 'scanq.sqlite3'}"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(stack, shared_data):
    version_id = _slow_version(stack)
    images = sample_images(shared_data, "xray", "covid", 40)
    files = [("files", (p.name, p.read_bytes())) for p in images]
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", files=files,
                         data={"modality": "xray", "model_version": str(version_id)})  # fmt: skip
    job_id = resp.json()["id"]
    deadline = time.monotonic() + 240
    running: list[int] = []
    while not running:  # wait until, after the first batch landed, another is being scored
        assert time.monotonic() < deadline, stack.log("worker")
        time.sleep(0.05)
        with session_scope(_db(stack)) as s:
            done = s.scalar(select(func.count(Batch.id)).where(
                Batch.job_id == job_id, Batch.status == "done"))  # fmt: skip
            running = list(s.scalars(
                select(Batch.id).where(Batch.job_id == job_id, Batch.status == "running")
            )) if done else []  # fmt: skip
    children = _children(stack.worker.pid)
    assert running and children
    for child in children:
        os.kill(child, signal.SIGKILL)

    job = stack.wait_job(job_id, timeout=300)
    assert job["status"] == "succeeded", stack.log("worker")
    assert (job["done"], job["failed"]) == (40, 0)
    with session_scope(_db(stack)) as s:
        per_scan = s.execute(
            select(Result.scan_id, func.count()).where(Result.job_id == job_id)
            .group_by(Result.scan_id)
        ).all()  # fmt: skip
        attempts = dict(
            s.execute(select(Batch.id, Batch.attempts).where(Batch.job_id == job_id)).all()
        )
    assert len(per_scan) == 40 and {n for _, n in per_scan} == {1}
    assert any(attempts[b] >= 2 for b in running)  # the killed batch ran again
    # The whole log: the new worker process's lines come after the kill's.
    log = (stack.logs / "worker.log").read_text(errors="replace")
    assert "WorkerLostError" in log or "SIGKILL" in log


def test_a_file_that_crashed_the_worker_fails_alone(stack, shared_data):
    """What a crash leaves in SQL: a batch delivered twice without finishing, and the
    file in hand when the process died. The next delivery leaves that file out with a
    reason and scores the rest one by one."""
    from dataclasses import replace

    from db.jobs import IncomingScan, create_inference_job
    from db.models import Scan
    from db.registry import active_version
    from scanq.settings import load_settings
    from scanq.storage import store_bytes
    from worker.celery_app import SCORE_BATCH, create_celery
    from worker.scoring import POISON_ERROR

    scans = []
    for p in sample_images(shared_data, "ct", "covid", 6):
        digest, rel = store_bytes(stack.data_dir, p.read_bytes())
        scans.append(IncomingScan(p.name, digest, rel, p.stat().st_size, 1, 1))
    with session_scope(_db(stack)) as s:
        job, (batch_id,) = create_inference_job(
            s, "ct", active_version(s, "ct").id, scans, batch_size=8
        )
        job_id = job.id
        ids = s.scalars(select(Scan.id).where(Scan.job_id == job_id).order_by(Scan.position))
        poison = list(ids)[2]
        s.execute(Batch.__table__.update().where(Batch.id == batch_id)
                  .values(status="running", attempts=2, probing_scan_id=poison))  # fmt: skip

    celery = create_celery(replace(load_settings(), redis_url=stack.env["REDIS_URL"]))
    celery.send_task(SCORE_BATCH, args=[batch_id])
    job = stack.wait_job(job_id)
    assert job["status"] == "succeeded" and (job["done"], job["failed"]) == (5, 1)
    items = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}/results").json()["items"]
    bad = [i for i in items if i["status"] == "failed"]
    assert [i["scan_id"] for i in bad] == [poison] and bad[0]["error"] == POISON_ERROR
    assert all(0 <= i["probability"] <= 1 for i in items if i["status"] == "scored")
    with session_scope(_db(stack)) as s:
        batch = s.get(Batch, batch_id)
        assert batch.probing_scan_id is None and batch.status == "done"


def test_a_file_whose_read_never_ends_fails_alone(tmp_path_factory, redis_url, shared_data):
    """A stored scan that blocks its reader forever (a FIFO with no writer, as a stalled
    network mount would): each delivery of its batch runs into the time limit and ends
    its worker process, which puts the batch back on the queue; after two whole-batch
    attempts it is scored file by file, the next timeout names the file, and the
    delivery after that leaves it out. The other scans are scored once each.

    The limit is shorter than a new worker process takes to load the model on a busy
    2-core machine, and four processes load it here: the limit counts scoring only
    (worker.warmup), so the job ends however slow the load."""
    from dataclasses import replace

    from db.jobs import IncomingScan, create_inference_job
    from db.models import Scan
    from db.registry import active_version
    from scanq.settings import load_settings
    from scanq.storage import store_bytes
    from tests.conftest import Stack, free_port
    from worker.celery_app import SCORE_BATCH, create_celery
    from worker.scoring import POISON_ERROR

    stack = Stack(tmp_path_factory.mktemp("hang"), redis_url, free_port(), None)
    stack.env["SCANQ_BATCH_TIME_LIMIT"] = "6"
    try:
        stack.start()
        scans = []
        for p in sample_images(shared_data, "ct", "non_covid", 4):
            digest, rel = store_bytes(stack.data_dir, p.read_bytes())
            scans.append(IncomingScan(p.name, digest, rel, p.stat().st_size, 1, 1))
        os.mkfifo(stack.data_dir / "scans" / "stalled")
        scans.insert(1, IncomingScan("stalled.png", "f" * 64, "scans/stalled", 1000, 1, 1))
        with session_scope(_db(stack)) as s:
            job, (batch_id,) = create_inference_job(s, "ct", active_version(s, "ct").id, scans, 8)
            job_id = job.id
            stalled = s.scalar(select(Scan.id).where(Scan.job_id == job_id,
                                                     Scan.filename == "stalled.png"))  # fmt: skip
        celery = create_celery(replace(load_settings(), redis_url=stack.env["REDIS_URL"]))
        celery.send_task(SCORE_BATCH, args=[batch_id])

        job = stack.wait_job(job_id, timeout=900)  # four processes, four model loads
        assert job["status"] == "succeeded" and (job["done"], job["failed"]) == (4, 1), job
        items = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}/results").json()["items"]
        bad = [i for i in items if i["status"] == "failed"]
        assert [i["scan_id"] for i in bad] == [stalled] and bad[0]["error"] == POISON_ERROR
        with session_scope(_db(stack)) as s:
            batch = s.get(Batch, batch_id)
            assert batch.attempts == 4 and batch.status == "done"
            per_scan = s.execute(
                select(Result.scan_id, func.count())
                .where(Result.job_id == job_id)
                .group_by(Result.scan_id)
            ).all()
        assert len(per_scan) == 5 and all(n == 1 for _scan, n in per_scan)
        log = (stack.logs / "worker.log").read_text(errors="replace")
        events = [
            line
            for line in log.splitlines()
            if "left for later" not in line and ("pid" in line or "limit" in line)
        ]
        # Only the three deliveries that opened the file died; each of the four worker
        # processes loaded the model before it scored, outside the limit.
        assert log.count("ran past its time limit") == 3, "\n".join(events)
        loads = re.findall(r"model version \d+: predictor ready in [\d.]+ s \(pid (\d+)", log)
        assert len(set(loads)) >= 4, "\n".join(events)
    finally:
        stack.stop()


def test_queued_work_survives_a_redis_restart(tmp_path_factory, shared_data):
    """Redis with its append-only file, restarted while a job's batches wait in it: the
    messages come back with it and the job finishes without any re-send from SQL."""
    from cli.processes import worker_command
    from scanq.embedded_redis import free_port, start_redis
    from tests.conftest import Stack

    redis_dir, port = tmp_path_factory.mktemp("aof"), free_port()
    redis, url = start_redis(redis_dir, port=port, appendonly=True)
    stack = Stack(tmp_path_factory.mktemp("stack"), url, free_port(), None)
    try:
        stack.start()
        stack.worker.terminate()  # nobody consumes: the batches wait in Redis
        stack.worker.wait(30)
        images = sample_images(shared_data, "xray", "non_covid", 12)
        files = [("files", (p.name, p.read_bytes())) for p in images]
        job_id = stack.http.post(f"{stack.url}/api/v1/jobs", files=files,
                               data={"modality": "xray"}).json()["id"]  # fmt: skip
        with session_scope(_db(stack)) as s:
            sent = dict(s.execute(select(Batch.id, Batch.enqueued_at)
                                  .where(Batch.job_id == job_id)).all())  # fmt: skip
        assert len(sent) == 2 and all(sent.values())

        redis.terminate()  # SIGTERM: Redis flushes its append-only file and exits
        redis.wait(30)
        redis, _url = start_redis(redis_dir, port=port, appendonly=True)
        stack.spawn("worker-after-restart", worker_command("inference", 1, "again"))
        job = stack.wait_job(job_id, timeout=180)
        assert job["status"] == "succeeded" and job["done"] == 12
        with session_scope(_db(stack)) as s:
            again = dict(s.execute(select(Batch.id, Batch.enqueued_at)
                                   .where(Batch.job_id == job_id)).all())  # fmt: skip
        assert again == sent  # delivered from Redis's own file, not re-sent from SQL
    finally:
        stack.stop()
        redis.terminate()  # the restarted server too: nothing outlives the test
        redis.wait(30)


def test_database_locked_for_longer_than_its_timeout_delays_but_loses_nothing(stack, shared_data):
    """SQLite held under an exclusive lock past the workers' 30 s busy timeout: their
    writes fail with OperationalError, the task retries with backoff, and the job
    finishes once the lock is gone."""
    import sqlite3
    from dataclasses import replace

    from db.jobs import IncomingScan, create_inference_job
    from db.registry import active_version
    from scanq.settings import load_settings
    from scanq.storage import store_bytes
    from worker.celery_app import SCORE_BATCH, create_celery

    scans = []
    for p in sample_images(shared_data, "ct", "non_covid", 10):
        digest, rel = store_bytes(stack.data_dir, p.read_bytes())
        scans.append(IncomingScan(p.name, digest, rel, p.stat().st_size, 1, 1))
    with session_scope(_db(stack)) as s:
        job, batch_ids = create_inference_job(s, "ct", active_version(s, "ct").id, scans, 8)
        job_id = job.id
    celery = create_celery(replace(load_settings(), redis_url=stack.env["REDIS_URL"]))

    lock = sqlite3.connect(stack.data_dir / "scanq.sqlite3", timeout=30)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        for batch_id in batch_ids:  # the worker's first write meets the lock
            celery.send_task(SCORE_BATCH, args=[batch_id])
        time.sleep(36)  # past the 30 s busy timeout
        assert stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}").json()["done"] == 0
    finally:
        lock.rollback()
        lock.close()
    job = stack.wait_job(job_id, timeout=240)
    assert job["status"] == "succeeded" and job["done"] == 10, stack.log("worker")
    log = stack.log("worker")
    assert "database is locked" in log and "Retry in" in log


def test_cancel_stops_the_remaining_batches(stack, shared_data):
    version_id = _slow_version(stack)
    images = sample_images(shared_data, "xray", "covid", 40)
    files = [("files", (p.name, p.read_bytes())) for p in images]
    job_id = stack.http.post(f"{stack.url}/api/v1/jobs", files=files,
                           data={"modality": "xray", "model_version": str(version_id)}
                           ).json()["id"]  # fmt: skip
    deadline = time.monotonic() + 240
    while stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}").json()["done"] < 8:
        assert time.monotonic() < deadline, stack.log("worker")
        time.sleep(0.05)
    cancelled = stack.http.post(f"{stack.url}/api/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(8)  # long enough for the remaining batches' messages to be consumed
    with session_scope(_db(stack)) as s:
        statuses = list(s.scalars(select(Batch.status).where(Batch.job_id == job_id)))
        scored = s.scalar(select(func.count(Result.id)).where(Result.job_id == job_id))
    assert statuses.count("cancelled") >= 2  # batches not yet started never ran
    assert scored <= 24  # at most the batch in hand when the cancel came, and the first
    job = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["finished_at"]
