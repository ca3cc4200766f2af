"""The JSON API's validation and shapes, on a real SQLite database. The broker is
unreachable here on purpose: a submission must still be accepted and kept in SQL."""

import csv
import io
import os
import re
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from db.jobs import refresh_job, store_results
from db.models import Batch, Result, Scan
from db.session import session_scope
from scanq import DISCLAIMER
from tests.helpers import multipart_part, png, zip_of


def post_job(client, files, modality="xray", **extra):
    data = {"modality": modality, **extra}
    data["files"] = [(io.BytesIO(content), name) for name, content in files]
    return client.post("/api/v1/jobs", data=data, content_type="multipart/form-data")


def test_submit_answers_202_with_location_and_keeps_job_without_broker(client, app):
    resp = post_job(client, [("a.png", png(1)), ("b.zip", zip_of({"c.png": png(2)}))])
    assert resp.status_code == 202, resp.json
    job_id = resp.json["id"]
    assert resp.headers["Location"] == f"/api/v1/jobs/{job_id}"
    assert resp.json["total"] == 2 and resp.json["status"] == "queued"
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert {"id", "status", "modality", "total", "done", "failed", "model_version",
            "created_at", "finished_at"} <= set(job)  # fmt: skip
    assert job["model_version"] is not None
    with session_scope(app.config["SCANQ_SETTINGS"].database_url) as s:
        batch = s.scalars(select(Batch).where(Batch.job_id == job_id)).one()
        assert batch.enqueued_at is None  # left for the reconciler, not lost


def test_bad_requests_get_json_errors(client):
    cases = [
        (post_job(client, [("a.png", png())], modality=""), 400, "missing_modality"),
        (post_job(client, [("a.png", png())], modality="mri"), 400, "bad_modality"),
        (post_job(client, []), 400, "no_files"),
        (post_job(client, [("a.txt", b"hello")]), 422, "no_usable_images"),
        (post_job(client, [("a.png", png())], model_version="x"), 400, "bad_model_version"),
        (post_job(client, [("a.png", png())], model_version="999"), 404, "model_version_not_found"),
        (client.get("/api/v1/jobs/doesnotexist"), 404, "job_not_found"),
        (client.get("/api/v1/jobs/x/results?limit=0"), 400, "bad_limit"),
        (client.delete("/api/v1/jobs"), 405, "method_not_allowed"),
    ]
    for resp, status, code in cases:
        assert resp.status_code == status, (code, resp.json)
        assert resp.json["error"]["code"] == code
        assert resp.json["error"]["message"]


def test_model_of_other_modality_is_refused(client):
    models = client.get("/api/v1/models").json["items"]
    ct = next(m for m in models if m["modality"] == "ct")
    resp = post_job(client, [("a.png", png())], modality="xray", model_version=str(ct["id"]))
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "model_modality_mismatch"


def test_oversized_upload_is_413_json(client, app):
    app.config["MAX_CONTENT_LENGTH"] = 10_000
    resp = post_job(client, [("big.png", png(size=200))])
    assert resp.status_code == 413
    assert resp.json["error"]["code"] == "upload_too_large"
    assert "10,000 files" in resp.json["error"]["message"]


def test_bulk_upload_of_more_than_a_thousand_files_is_accepted(client, app):
    """Werkzeug's default limit of 1,000 form parts would refuse it with 413."""
    files = [(f"s{i}.png", png(i % 7)) for i in range(1100)]
    resp = post_job(client, files)
    assert resp.status_code == 202, resp.json
    assert resp.json["total"] == 1100


def test_more_files_than_allowed_is_413_json(client, app):
    app.config["MAX_FORM_PARTS"] = 5 + 64  # as for SCANQ_MAX_FILES=5
    resp = post_job(client, [(f"s{i}.png", png(i)) for i in range(80)])
    assert resp.status_code == 413
    assert "5 files" in resp.json["error"]["message"]
    # The first batches were already queued when the limit was hit: their job says why.
    (job,) = client.get("/api/v1/jobs").json["items"]
    assert job["status"] == "failed" and "upload stopped part-way" in job["error"]


def test_results_paginate_and_export_csv_with_disclaimer(client, app):
    files = [(f"img{i}.png", png(i)) for i in range(5)] + [("bad.png", b"nope")]
    job_id = post_job(client, files).json["id"]
    url = app.config["SCANQ_SETTINGS"].database_url
    with session_scope(url) as s:  # what a worker would write
        scans = s.scalars(select(Scan).where(Scan.job_id == job_id).order_by(Scan.position)).all()
        rows = [
            {"scan_id": sc.id, "job_id": job_id, "probability": 0.1 * i, "label": "non_covid",
             "model_version_id": 1}
            for i, sc in enumerate(scans[:5])
        ]  # fmt: skip
        store_results(s, rows)
        store_results(s, rows)  # redelivery: no duplicates
        refresh_job(s, job_id)
        assert s.scalar(select(func.count(Result.id)).where(Result.job_id == job_id)) == 6

    seen, path = [], f"/api/v1/jobs/{job_id}/results?limit=4"
    while path:
        page = client.get(path).json
        assert page["disclaimer"] == DISCLAIMER
        seen += page["items"]
        path = page["next"]
    assert [i["filename"] for i in seen] == [f"img{i}.png" for i in range(5)] + ["bad.png"]
    assert seen[-1]["status"] == "failed" and "not a readable image" in seen[-1]["error"]
    assert client.get(f"/api/v1/jobs/{job_id}").json["status"] == "succeeded"

    body = client.get(f"/api/v1/jobs/{job_id}/results.csv").get_data(as_text=True)
    first, rest = body.split("\n", 1)
    assert first == f"# {DISCLAIMER}"
    table = list(csv.DictReader(io.StringIO(rest)))
    assert len(table) == 6
    assert table[2]["probability"] == "0.200000" and table[2]["label"] == "non_covid"
    assert table[5]["status"] == "failed"


def test_cancel_moves_only_unfinished_jobs(client):
    job_id = post_job(client, [("a.png", png())]).json["id"]
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").json["status"] == "cancelled"
    again = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409


def test_pages_carry_the_disclaimer(client):
    job_id = post_job(client, [("a.png", png())]).json["id"]
    for path in ("/", "/jobs", f"/jobs/{job_id}", "/models"):
        html = client.get(path).get_data(as_text=True)
        assert DISCLAIMER in html, path


def test_upload_form_redirects_to_job_page(client):
    data = {"modality": "ct", "files": [(io.BytesIO(png()), "slice.png")]}
    resp = client.post("/upload", data=data, content_type="multipart/form-data")
    assert resp.status_code == 303
    assert client.get(resp.headers["Location"]).status_code == 200


def test_activate_switches_the_active_version(client):
    models = client.get("/api/v1/models").json["items"]
    xray = next(m for m in models if m["modality"] == "xray")
    assert client.post(f"/api/v1/models/{xray['id']}/activate").json["active"] is True
    assert client.post("/api/v1/models/9999/activate").status_code == 404


def test_web_process_never_imports_tensorflow(app):
    """The web app (pages, API, training requests) must stay free of TensorFlow: it
    would slow every gunicorn worker's start and hold memory it never uses."""
    code = (
        "import sys; from web.app import create_app; app = create_app(); "
        "c = app.test_client(); c.get('/'); c.get('/models'); c.get('/api/v1/models'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    env = {**os.environ, "SCANQ_DATA_DIR": str(app.config["SCANQ_SETTINGS"].data_dir)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_production_refuses_the_development_secret(app):
    from dataclasses import replace

    from scanq.settings import DEFAULT_SECRET
    from web.app import create_app

    settings = app.config["SCANQ_SETTINGS"]
    with pytest.raises(RuntimeError, match="needs SECRET_KEY"):
        create_app(replace(settings, environment="production", secret_key=DEFAULT_SECRET))
    ok = create_app(replace(settings, environment="production", secret_key="x" * 40))
    assert ok.config["SECRET_KEY"] == "x" * 40


def test_job_page_pages_through_more_than_500_files(client, app):
    from db.jobs import IncomingScan, create_inference_job
    from db.registry import active_version
    from db.session import session_scope

    url = app.config["SCANQ_SETTINGS"].database_url
    with session_scope(url) as s:
        scans = [IncomingScan(f"f{i:04d}.png", error="not an image") for i in range(505)]
        job, _ = create_inference_job(s, "xray", active_version(s, "xray").id, scans, 32,
                                      owner="tester")  # fmt: skip
        job_id = job.id
    first = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "f0499.png" in first and "f0500.png" not in first
    link = re.search(r'id="next-page" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(link).get_data(as_text=True)
    assert "f0500.png" in second and "f0504.png" in second and "f0499.png" not in second
    assert 'id="next-page"' not in second
    assert client.get(f"/jobs/{job_id}?after=x").status_code == 400


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "scanqtest"):
    """A body in the order given (test clients put fields first)."""
    out = b"".join(multipart_part(boundary, *p) for p in parts)
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_fields_sent_after_the_files_still_count(client):
    body, ctype = _multipart([("files", "a.png", png(1)), ("files", "b.png", png(2)),
                              ("modality", None, b"ct")])  # fmt: skip
    resp = client.post("/api/v1/jobs", data=body, content_type=ctype)
    assert resp.status_code == 202, resp.json
    assert client.get(f"/api/v1/jobs/{resp.json['id']}").json["modality"] == "ct"


def test_streamed_upload_fills_every_batch_but_the_last(client, app):
    """Files are stored and queued a few at a time; a rejected file in one chunk must
    not leave a short batch in the middle of the job."""
    from dataclasses import replace

    app.config["SCANQ_SETTINGS"] = replace(app.config["SCANQ_SETTINGS"], batch_size=3)
    files = [(f"s{i}.png", png(i)) for i in range(5)] + [("bad.png", b"nope")]
    files += [(f"t{i}.png", png(i)) for i in range(5)]
    resp = post_job(client, files)
    assert resp.status_code == 202, resp.json
    with session_scope(app.config["SCANQ_SETTINGS"].database_url) as s:
        sizes = s.scalars(select(Batch.size).where(Batch.job_id == resp.json["id"])
                          .order_by(Batch.seq)).all()  # fmt: skip
        names = s.scalars(select(Scan.filename).where(Scan.job_id == resp.json["id"])
                          .order_by(Scan.position)).all()  # fmt: skip
    assert sizes == [3, 3, 3, 1]
    assert names == [name for name, _ in files]
    assert resp.json["total"] == 11 and resp.json["failed"] == 1


def test_a_request_refused_part_way_leaves_its_job_failed(client, app):
    """Over the file limit after some batches were queued: 400 as before, and the
    job that had opened says why it stopped instead of waiting for ever."""
    from dataclasses import replace

    settings = replace(app.config["SCANQ_SETTINGS"], batch_size=2, max_files_per_job=6)
    app.config["SCANQ_SETTINGS"] = settings
    resp = post_job(client, [(f"s{i}.png", png(i)) for i in range(9)])
    assert resp.status_code == 400 and resp.json["error"]["code"] == "too_many_files"
    (job,) = client.get("/api/v1/jobs").json["items"]
    assert job["status"] == "failed" and "more than 6 files" in job["error"]


@pytest.mark.parametrize(
    "body",
    [
        multipart_part("scanqtest", "files", "a.png", png(1))[:-30],
        b"no multipart here at all",
        multipart_part("scanqtest", "modality", None, b"xray") + b"--scanqtest--\r\n",
    ],
    ids=["cut-off", "garbage", "fields-only"],
)
def test_a_broken_multipart_body_is_a_clear_400(client, body):
    resp = client.post("/api/v1/jobs", data=body,
                       content_type="multipart/form-data; boundary=scanqtest")  # fmt: skip
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.json["error"]["code"] in ("bad_upload", "no_files")
    assert client.get("/api/v1/jobs").json["items"] == []


class _CancelsMidway(io.BytesIO):
    """A request body that, once `after` bytes were read, cancels the job being
    uploaded, as a user would from the job page while the files still arrive."""

    def __init__(self, body: bytes, after: int, database_url: str):
        super().__init__(body)
        self.after, self.database_url, self.cancelled = after, database_url, None

    def readinto(self, buffer):  # what Werkzeug's LimitedStream calls
        self._maybe_cancel()
        return super().readinto(buffer)

    def read(self, size=-1):
        self._maybe_cancel()
        return super().read(size)

    def _maybe_cancel(self) -> None:
        if self.cancelled is None and self.tell() >= self.after:
            from db.jobs import cancel_job
            from db.models import Job

            with session_scope(self.database_url) as s:
                job_id = s.scalar(select(Job.id).where(Job.status == "receiving"))
                if job_id is not None:
                    self.cancelled = job_id
                    assert cancel_job(s, job_id)


def test_a_job_cancelled_while_its_files_arrive_stores_no_more_of_them(client, app):
    from dataclasses import replace

    from db.models import Job

    settings = replace(app.config["SCANQ_SETTINGS"], batch_size=2)
    app.config["SCANQ_SETTINGS"] = settings
    # 40 KB files: the body arrives over many reads, so the job opens before the cancel.
    files = [("files", f"s{i}.png", png(i, size=200)) for i in range(16)]
    body, ctype = _multipart([("modality", None, b"xray"), *files])
    stream = _CancelsMidway(body, len(body) // 2, settings.database_url)
    resp = client.post("/api/v1/jobs", input_stream=stream, content_type=ctype,
                       content_length=len(body))  # fmt: skip
    assert stream.cancelled is not None, "the job never opened before the cancel"
    assert resp.status_code == 409 and resp.json["error"]["code"] == "job_cancelled"
    assert stream.tell() == len(body)  # the rest was read (and dropped): a clean answer
    with session_scope(settings.database_url) as s:
        job = s.get(Job, stream.cancelled)
        stored = s.scalar(select(func.count()).select_from(Scan).where(Scan.job_id == job.id))
        open_batches = s.scalar(select(func.count()).select_from(Batch).where(
            Batch.job_id == job.id, Batch.status.in_(("queued", "running"))))  # fmt: skip
    assert job.status == "cancelled"
    assert 0 < stored < len(files)  # what came before the cancel stays, no more
    assert f"the {stored} files received before keep their results" in resp.json["error"]["message"]
    assert open_batches == 0  # no batch of the cancelled job waits for a worker


def _browser(app):
    """A test client logged in with a password, as a browser is: a session cookie, and
    the page's CSRF token."""
    from db.accounts import ensure_user

    with session_scope(app.config["SCANQ_SETTINGS"].database_url) as s:
        ensure_user(s, "viewer", "user", password="pw-for-tests")
    browser = app.test_client()
    page = browser.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = browser.post("/login", data={"name": "viewer", "password": "pw-for-tests",
                                        "csrf_token": token})  # fmt: skip
    assert resp.status_code == 303
    front = browser.get("/").get_data(as_text=True)
    return browser, re.search(r'name="csrf_token" value="([^"]+)"', front).group(1)


class _WatchesMidway(io.BytesIO):
    """A request body that, half-way through, notes how many scans the server has
    already stored: more than none means the upload is stored while it arrives."""

    def __init__(self, body: bytes, database_url: str):
        super().__init__(body)
        self.database_url, self.stored_midway = database_url, None

    def readinto(self, buffer):
        if self.stored_midway is None and self.tell() >= len(self.getvalue()) // 2:
            with session_scope(self.database_url) as s:
                self.stored_midway = s.scalar(select(func.count()).select_from(Scan))
        return super().readinto(buffer)


def test_the_upload_page_stores_files_while_they_arrive(app):
    from dataclasses import replace

    settings = replace(app.config["SCANQ_SETTINGS"], batch_size=2)
    app.config["SCANQ_SETTINGS"] = settings
    browser, token = _browser(app)
    files = [("files", f"s{i}.png", png(i, size=200)) for i in range(16)]
    body, ctype = _multipart([("csrf_token", None, token.encode()),
                              ("modality", None, b"xray"), *files])  # fmt: skip
    stream = _WatchesMidway(body, settings.database_url)
    resp = browser.post("/upload", input_stream=stream, content_type=ctype,
                        content_length=len(body))  # fmt: skip
    assert resp.status_code == 303, resp.get_data(as_text=True)[:500]
    assert 0 < stream.stored_midway < len(files)
    job = browser.get(resp.headers["Location"].replace("/jobs/", "/api/v1/jobs/")).json
    assert job["total"] == len(files)


def test_a_page_upload_without_its_csrf_token_stores_nothing(app):
    browser, token = _browser(app)
    files = [("files", f"s{i}.png", png(i, size=200)) for i in range(6)]
    for fields in ([("modality", None, b"xray")],
                   [("csrf_token", None, b"forged"), ("modality", None, b"xray")]):  # fmt: skip
        body, ctype = _multipart([*fields, *files])
        resp = browser.post("/upload", data=body, content_type=ctype)
        assert resp.status_code == 400 and "CSRF" in resp.get_data(as_text=True)
    # The same through the API with the cookie: refused; with the page's token in a
    # header (as the site's scripts send it), accepted.
    body, ctype = _multipart([("modality", None, b"xray"), *files])
    refused = browser.post("/api/v1/jobs", data=body, content_type=ctype)
    assert refused.status_code == 400 and refused.json["error"]["code"] == "csrf_failed"
    with session_scope(app.config["SCANQ_SETTINGS"].database_url) as s:
        assert s.scalar(select(func.count()).select_from(Scan)) == 0
    ok = browser.post("/api/v1/jobs", data=body, content_type=ctype,
                      headers={"X-CSRFToken": token})  # fmt: skip
    assert ok.status_code == 202 and ok.json["total"] == len(files)
    # Fields after the files (a client of its own): still checked, once all has arrived.
    body, ctype = _multipart(
        [*files, ("modality", None, b"ct"), ("csrf_token", None, token.encode())]
    )
    late = browser.post("/upload", data=body, content_type=ctype)
    assert late.status_code == 303
