"""End to end through real processes: HTTP upload -> SQL -> Redis -> Celery worker ->
SQL, and the `scanq` command line against the same stack."""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import replace

from sqlalchemy import func, select

from db.models import Batch, Job, Result, Scan
from db.session import session_scope
from models import ood_sets
from scanq import DISCLAIMER
from scanq.settings import load_settings
from tests.conftest import sample_images
from tests.helpers import multipart_part


def _db_url(stack) -> str:
    return f"sqlite:///{stack.data_dir / 'scanq.sqlite3'}"


def test_bulk_job_over_http_scores_every_image_once(stack, shared_data):
    covid = sample_images(shared_data, "xray", "covid", 12)
    normal = sample_images(shared_data, "xray", "non_covid", 8)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for p in normal[4:]:
            zf.write(p, f"folder/{p.name}")
    files = [("files", (p.name, p.read_bytes())) for p in covid + normal[:4]]
    files += [
        ("files", ("more.zip", archive.getvalue())),
        ("files", ("notes.png", b"definitely not an image")),
    ]
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", files=files, data={"modality": "xray"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.headers["Location"].endswith(f"/api/v1/jobs/{job_id}")

    job = stack.wait_job(job_id)
    assert job["status"] == "succeeded", stack.log("worker")
    assert (job["total"], job["done"], job["failed"]) == (21, 20, 1)

    items, path = [], f"/api/v1/jobs/{job_id}/results?limit=7"
    while path:
        page = stack.http.get(stack.url + path).json()
        items += page["items"]
        path = page["next"]
    assert len(items) == 21
    scored = [i for i in items if i["status"] == "scored"]
    assert len(scored) == 20
    assert all(0.0 <= i["probability"] <= 1.0 for i in scored)
    assert all(i["label"] in ("covid", "non_covid") for i in scored)
    assert {i["model_version"] for i in scored} == {job["model_version"]}
    assert len({round(i["probability"], 6) for i in scored}) > 1  # not a constant
    bad = next(i for i in items if i["filename"] == "notes.png")
    assert bad["status"] == "failed" and bad["error"]

    with session_scope(_db_url(stack)) as s:
        n_results = s.scalar(select(func.count(Result.id)).where(Result.job_id == job_id))
        n_scans = s.scalar(select(func.count(Scan.id)).where(Scan.job_id == job_id))
        stats = list(s.scalars(select(Batch.stats).where(Batch.job_id == job_id)))
    assert n_results == n_scans == 21
    # every batch says where its time went (bench/throughput.py reads these)
    assert sum(st["n"] for st in stats) == 20
    for st in stats:
        assert {"queue_ms", "decode_ms", "model_ms", "write_ms"} <= set(st)
        assert st["model_ms"] > 0 and st["decode_ms"] > 0 and st["queue_ms"] >= 0

    body = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}/results.csv").text
    assert body.startswith(f"# {DISCLAIMER}\n")
    rows = list(csv.DictReader(io.StringIO(body.split("\n", 1)[1])))
    assert len(rows) == 21

    page = stack.http.get(f"{stack.url}/jobs/{job_id}").text
    assert DISCLAIMER in page and "succeeded" in page


def test_redelivered_batches_do_not_duplicate_results(stack, shared_data):
    """Send every batch of a finished job again, as a broker redelivery would."""
    from worker.celery_app import SCORE_BATCH, create_celery

    images = sample_images(shared_data, "ct", "covid", 10)
    files = [("files", (p.name, p.read_bytes())) for p in images]
    job_id = stack.http.post(
        f"{stack.url}/api/v1/jobs", files=files, data={"modality": "ct"}
    ).json()["id"]
    assert stack.wait_job(job_id)["status"] == "succeeded"
    with session_scope(_db_url(stack)) as s:
        batch_ids = list(s.scalars(select(Batch.id).where(Batch.job_id == job_id)))
        assert len(batch_ids) == 2  # SCANQ_BATCH_SIZE=8
        s.execute(Batch.__table__.update().where(Batch.job_id == job_id).values(status="running"))
        s.execute(Job.__table__.update().where(Job.id == job_id).values(status="running"))
    celery = create_celery(replace(load_settings(), redis_url=stack.env["REDIS_URL"]))
    for batch_id in batch_ids:
        celery.send_task(SCORE_BATCH, args=[batch_id])
    job = stack.wait_job(job_id)
    assert job["status"] == "succeeded" and job["done"] == 10
    with session_scope(_db_url(stack)) as s:
        assert s.scalar(select(func.count(Result.id)).where(Result.job_id == job_id)) == 10


def test_cli_submit_wait_status_and_results(stack, shared_data, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for p in sample_images(shared_data, "ct", "non_covid", 6):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "blank.png").write_bytes(ood_sets.png_bytes(ood_sets.blank(1)[0]))
    run = stack.scanq("submit", str(folder), "--modality", "ct", "--skip-out-of-distribution",
                      "--wait", timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip().splitlines()[-1]
    assert "succeeded: 6 scored, 0 failed, of 7; 1 out of distribution (not scored)" in run.stderr
    # Not a terminal: click's progress bar prints its label once, no carriage returns.
    assert "\r" not in run.stderr and run.stderr.splitlines().count("images") == 1, run.stderr

    status = stack.scanq("status", job_id)
    assert '"status": "succeeded"' in status.stdout

    out = tmp_path / "results.csv"
    res = stack.scanq("results", job_id, "--csv", str(out))
    assert res.returncode == 0, res.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == f"# {DISCLAIMER}"
    assert len(lines) == 1 + 1 + 7

    missing = stack.scanq("submit", str(tmp_path / "nope"), "--modality", "ct")
    assert missing.returncode != 0 and "no such file" in missing.stderr
    unknown = stack.scanq("status", "0" * 32)
    assert unknown.returncode != 0 and "job_not_found" in unknown.stderr


def test_healthz_sees_redis_and_database(stack):
    body = stack.http.get(f"{stack.url}/healthz").json()
    assert body["checks"] == {"web": "ok", "database": "ok", "redis": "ok"}


def test_scoring_starts_while_the_upload_is_still_arriving(stack, shared_data):
    """The request body is sent in two halves; the second only after the worker has
    scored the whole first batch (SCANQ_BATCH_SIZE=8), seen from another connection
    while the job still says `receiving`. A job whose files all had to arrive first
    could never let this request finish."""
    import time

    images = sample_images(shared_data, "xray", "covid", 8)
    images += sample_images(shared_data, "xray", "non_covid", 8)
    boundary = "scanq-stream-test"

    def part(name: str, filename: str | None, data: bytes) -> bytes:
        return multipart_part(boundary, name, filename, data)

    seen: dict = {}

    def body():
        yield part("modality", None, b"xray")
        for p in images[:8]:
            yield part("files", p.name, p.read_bytes())
        yield part("padding", "pad.bin", b"\0" * 200_000)  # pushes the 8th file through
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs = stack.http.get(f"{stack.url}/api/v1/jobs?limit=1").json()["items"]
            if jobs and jobs[0]["status"] == "receiving" and jobs[0]["done"] >= 8:
                seen.update(jobs[0])
                break
            time.sleep(0.2)
        for p in images[8:]:
            yield part("files", p.name, p.read_bytes())
        yield f"--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", data=body(), headers=headers)
    assert resp.status_code == 202, resp.text
    assert seen, "no batch was scored while the upload was open\n" + stack.log("worker")
    assert seen["id"] == resp.json()["id"] and seen["total"] == 8
    job = stack.wait_job(resp.json()["id"])
    assert (job["status"], job["total"], job["done"], job["failed"]) == ("succeeded", 16, 16, 0)


def test_scored_xrays_say_how_much_of_their_heat_lies_in_the_lungs(stack, shared_data):
    """lung_heat_share (models.lung.share) is measured by the worker for every scored
    X-ray and shown by the API, the CSV and the result page."""
    images = sample_images(shared_data, "xray", "covid", 3)
    images += sample_images(shared_data, "xray", "non_covid", 3)
    files = [("files", (p.name, p.read_bytes())) for p in images]
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", files=files, data={"modality": "xray"})
    job = stack.wait_job(resp.json()["id"])
    assert job["done"] == 6, stack.log("worker")
    items = stack.http.get(f"{stack.url}/api/v1/jobs/{job['id']}/results").json()["items"]
    shares = [i["lung_heat_share"] for i in items]
    assert all(s is not None and 0.0 <= s <= 1.0 for s in shares), (shares, stack.log("worker"))
    assert len(set(shares)) > 1  # measured per image
    one = stack.http.get(f"{stack.url}/api/v1/results/{items[0]['scan_id']}").json()
    assert one["lung_heat_share"] == shares[0]
    assert (one["lung_warning"] is not None) == (shares[0] < 0.5)
    body = stack.http.get(f"{stack.url}/api/v1/jobs/{job['id']}/results.csv").text
    rows = list(csv.DictReader(io.StringIO(body.split("\n", 1)[1])))
    assert sorted(float(r["lung_heat_share"]) for r in rows) == sorted(shares)
    page = stack.http.get(f"{stack.url}/results/{items[0]['scan_id']}").text
    assert "Heat inside the lungs" in page and f"{100 * shares[0]:.0f}%" in page
    with session_scope(_db_url(stack)) as s:
        stats = list(s.scalars(select(Batch.stats).where(Batch.job_id == job["id"])))
    assert all(st["lung_share_ms"] > 0 for st in stats)
