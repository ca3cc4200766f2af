"""DICOM in without the network (issue #19): routing by header, STOW-RS through the
Flask app (stored as it arrives, the PS3.18 answer, refusals with reasons), settling a
study into a job of its routable instances (and a follow-up job for late ones), the
worklist and who sees patient fields. Synthetic pixels only (random noise written as
PNGs here), never the development data."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from models.readers.dicom import DicomTags, read_tags
from pacs.router import route
from tests.dicom_factory import ct_series, dx_study
from tests.helpers import png

CT, DX = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1"
# The receive -> settle -> job -> verdict path on SQLite and on PostgreSQL (its
# conditional updates, unique keys and savepoints; skipped without a server, failed
# under SCANQ_STRICT, as tests/unit/test_db.py's).
BOTH_DATABASES = pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)


@pytest.mark.parametrize(
    ("sop", "modality", "view", "body", "image_type", "expected"),
    [
        (CT, "CT", None, "CHEST", ("ORIGINAL", "PRIMARY", "AXIAL"), "ct"),
        (CT, "CT", None, "", (), "ct"),
        (CT, "CT", None, "CHEST", ("ORIGINAL", "PRIMARY", "LOCALIZER"), None),
        (CT, "CT", None, "HEAD", (), None),
        (DX, "DX", "PA", "CHEST", (), "xray"),
        (DX, "DX", "AP", None, (), "xray"),
        (DX, "DX", "LL", "CHEST", (), None),
        (DX, "DX", None, "CHEST", (), None),
        ("1.2.840.10008.5.1.4.1.1.88.33", "SR", None, None, (), None),
        ("1.2.840.10008.5.1.4.1.1.4", "MR", None, "CHEST", (), None),
    ],
)
def test_the_router_screens_ct_slices_and_frontal_radiographs_only(
    sop, modality, view, body, image_type, expected
):
    where = route(
        DicomTags(modality, None, None, None, None, sop, None, None, view, body, image_type)
    )
    assert where.modality == expected
    assert (where.reason is None) == (expected is not None)


def test_the_fields_the_router_reads_come_from_the_one_header_reader(tmp_path):
    (lateral,) = dx_study(_pngs(tmp_path, 1), ["LL"], accession="ACC-7").files()
    tags = read_tags(lateral)
    assert (tags.view_position, tags.body_part, tags.accession) == ("LL", "CHEST", "ACC-7")
    assert tags.image_type == ("ORIGINAL", "PRIMARY") and len(tags.study_date) == 8
    assert route(tags) == (None, "LL view: only frontal (PA, AP) radiographs are screened")


def _pngs(tmp_path, n: int, size: int = 64) -> list:
    paths = []
    for i in range(n):
        path = tmp_path / f"noise{i}.png"
        path.write_bytes(png(seed=i, size=size))
        paths.append(path)
    return paths


def _related(parts: list[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = "scanq-test-boundary"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n" for p in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _stow(client, parts, path="/dicomweb/studies", **kw):
    body, ctype = _related(parts, **kw)
    return client.post(path, data=body, content_type=ctype)


@BOTH_DATABASES
def test_stow_stores_each_instance_and_answers_with_the_ps318_response(app, client, tmp_path):
    study = ct_series(_pngs(tmp_path, 2), patient_id="PID-1", accession="ACC-1")
    resp = _stow(client, study.files())
    assert resp.status_code == 200, resp.data
    assert resp.content_type == "application/dicom+json"
    referenced = resp.json["00081199"]["Value"]
    assert [r["00081155"]["Value"][0] for r in referenced] == study.sop_instance_uids
    listed = client.get("/api/v1/studies").json
    assert listed["total"] == 1
    (item,) = listed["items"]
    assert item["study_uid"] == study.study_uid and item["instances"] == 2
    assert item["patient"] == {
        "patient_id": "PID-1",
        "accession": "ACC-1",
        "study_date": study.study_date,
    }
    assert item["status"] == "receiving" and item["source"] == "stow"
    again = _stow(client, study.files())  # the same instances again: stored once
    assert again.status_code == 200
    assert client.get(f"/api/v1/studies/{item['id']}").json["instances"] == 2


def test_stow_refuses_what_is_not_dicom_with_the_reason(app, client, tmp_path):
    resp = client.post("/dicomweb/studies", data=b"hello", content_type="text/plain")
    assert resp.status_code == 415 and "multipart/related" in resp.json["error"]["message"]
    resp = _stow(client, [png(1)])
    assert resp.status_code == 400
    assert "no part is a DICOM instance" in resp.json["error"]["message"]
    study = ct_series(_pngs(tmp_path, 1))
    wrong = _stow(client, study.files(), path="/dicomweb/studies/1.2.3.4")
    assert wrong.status_code == 409
    failed = wrong.json["00081198"]["Value"][0]
    assert failed["00081155"]["Value"] == study.sop_instance_uids
    assert "not to the study 1.2.3.4" in wrong.headers["Warning"]
    mixed = _stow(client, [*study.files(), b"not dicom at all"])
    assert mixed.status_code == 202
    assert len(mixed.json["00081199"]["Value"]) == 1 and len(mixed.json["00081198"]["Value"]) == 1


def _settings(app):
    return app.config["SCANQ_SETTINGS"]


def _sweep(app, sent: list):
    from pacs.settle import sweep

    return sweep(_settings(app), lambda name, args: sent.append((name, args)))


def _age_studies(app, seconds: int = 3600) -> None:
    from db.models import Study, utcnow
    from db.session import session_scope

    with session_scope(_settings(app).database_url) as session:
        earlier = utcnow() - timedelta(seconds=seconds)
        session.execute(update(Study).values(last_received_at=earlier))


@BOTH_DATABASES
def test_a_settled_study_becomes_one_job_per_model_and_late_instances_a_follow_up(
    app, client, tmp_path
):
    from db.models import Job, Scan, StudyInstance, StudyJob
    from db.session import session_scope

    paths = _pngs(tmp_path, 3)
    ct = ct_series(paths[:2])
    dx = dx_study(paths[:2], ["PA", "LL"], patient_id=ct.patient_id)
    for ds in dx.instances:  # one study with a CT series and two radiographs
        ds.StudyInstanceUID = ct.study_uid
    assert _stow(client, [*ct.files(), *dx.files()]).status_code == 200
    sent: list = []
    assert _sweep(app, sent)["jobs"] == []  # not settled yet: instances just arrived
    _age_studies(app)
    made = _sweep(app, sent)["jobs"]
    assert len(made) == 2 and len(sent) == 2  # a CT job and an X-ray job, a batch each
    url = _settings(app).database_url
    with session_scope(url) as session:
        jobs = {j.modality: j for j in session.scalars(select(Job).where(Job.id.in_(made)))}
        assert jobs["ct"].total == 2 and jobs["xray"].total == 1
        assert jobs["ct"].options["study_id"] == jobs["xray"].options["study_id"]
        lateral = session.scalars(select(StudyInstance).where(StudyInstance.route.is_(None))).one()
        assert "LL view" in lateral.reason and lateral.job_id is None
        for inst in session.scalars(select(StudyInstance).where(StudyInstance.route.is_not(None))):
            scan = session.scalars(
                select(Scan).where(Scan.job_id == inst.job_id, Scan.position == inst.first_position)
            ).one()
            assert scan.filename == inst.sop_instance_uid and inst.frames == 1
    assert _sweep(app, sent)["jobs"] == []  # nothing new: no second job
    late = ct_series(paths[2:])
    late.instances[0].StudyInstanceUID = ct.study_uid
    late.instances[0].SeriesInstanceUID = ct.instances[0].SeriesInstanceUID
    assert _stow(client, late.files()).status_code == 200
    _age_studies(app)
    (follow_up,) = _sweep(app, sent)["jobs"]
    with session_scope(url) as session:
        assert session.get(Job, follow_up).total == 1
        assert (
            session.scalar(select(StudyJob.study_id).where(StudyJob.job_id == follow_up))
            == (jobs["ct"].options["study_id"])
        )


@BOTH_DATABASES
def test_the_verdict_is_stored_once_every_job_of_the_study_has_ended(app, client, tmp_path):
    from db.jobs import refresh_job, store_results
    from db.models import Scan, Study
    from db.session import session_scope

    ct = ct_series(_pngs(tmp_path, 3))
    assert _stow(client, ct.files()).status_code == 200
    _age_studies(app)
    sent: list = []
    (job_id,) = _sweep(app, sent)["jobs"]
    url = _settings(app).database_url
    with session_scope(url) as session:
        scans = session.scalars(select(Scan).where(Scan.job_id == job_id).order_by(Scan.position))
        rows = [
            {
                "scan_id": s.id,
                "job_id": job_id,
                "probability": p,
                "label": label,
                "out_of_distribution": False,
            }
            for s, (p, label) in zip(
                scans, [(0.2, "non_covid"), (0.9, "covid"), (None, None)], strict=True
            )
        ]
        rows[2]["error"] = "cannot decode"
        store_results(session, rows)
        refresh_job(session, job_id)
    assert _sweep(app, sent)["verdicts"] != []
    with session_scope(url) as session:
        study = session.scalars(select(Study)).one()
        assert study.status == "screened"
        assert study.score == pytest.approx(0.9) and study.label == "covid"
        assert study.failed == 1 and not study.flagged
        assert study.verdict["series"][0]["images"] == 3
    positive = client.get("/api/v1/studies?sort=score&positive=1").json
    assert positive["total"] == 1
    assert client.get("/api/v1/studies?failed=1").json["total"] == 1
    assert client.get("/api/v1/studies?flagged=1").json["total"] == 0
    assert client.get("/api/v1/studies?unreviewed=1").json["total"] == 1


def _score(app, job_id: str, probabilities: list[float]) -> None:
    """Results for a job's scans in position order, as the worker would store them."""
    from db.jobs import refresh_job, store_results
    from db.models import Scan
    from db.session import session_scope

    with session_scope(_settings(app).database_url) as session:
        scans = session.scalars(select(Scan).where(Scan.job_id == job_id).order_by(Scan.position))
        rows = [
            {"scan_id": s.id, "job_id": job_id, "probability": p, "out_of_distribution": False,
             "label": "covid" if p >= 0.5 else "non_covid"}
            for s, p in zip(scans, probabilities, strict=True)
        ]  # fmt: skip
        store_results(session, rows)
        refresh_job(session, job_id)


@BOTH_DATABASES
def test_an_instance_sent_again_with_other_content_replaces_the_old_in_the_verdict(
    app, client, tmp_path, monkeypatch
):
    """Same SOP Instance UID, new bytes: a follow-up job screens the new content, and the
    study verdict counts it instead of the old, whose result stays on its own job."""
    from db.deliveries import record_sent
    from db.models import DicomDelivery, DicomPeer, Result, Scan, Study
    from db.session import session_scope
    from pacs import delivery_tasks

    url = _settings(app).database_url
    with session_scope(url) as session:
        session.add(DicomPeer(ae_title="ARCHIVE", host="127.0.0.1", port=1, owner="tester"))
    queued: list = []
    monkeypatch.setattr(delivery_tasks, "queue_send", lambda d, g: queued.append(d))

    def deliver() -> list[str]:  # the jobs whose results would be sent (again) now
        queued.clear()
        delivery_tasks.deliver_study(study_id)
        with session_scope(url) as session:
            rows = [session.get(DicomDelivery, d) for d in queued]
            for row in rows:
                record_sent(row, ["1.2.3"])
            return [row.job_id for row in rows]

    ct = ct_series(_pngs(tmp_path, 4)[:2])
    assert _stow(client, ct.files(), path="/dicomweb/studies?results_to=ARCHIVE").status_code == 200
    study_id = client.get("/api/v1/studies").json["items"][0]["id"]
    _age_studies(app)
    (first,) = _sweep(app, [])["jobs"]
    _score(app, first, [0.95, 0.05])
    assert _sweep(app, [])["verdicts"] and deliver() == [first]
    ct.instances[0].PixelData = ct_series(_pngs(tmp_path, 4)[2:3]).instances[0].PixelData
    assert _stow(client, ct.files()[:1]).status_code == 200  # changed: replaces
    assert _stow(client, ct.files()[1:]).status_code == 200  # unchanged: a duplicate
    _age_studies(app)
    (follow_up,) = _sweep(app, [])["jobs"]
    _score(app, follow_up, [0.01])
    assert _sweep(app, [])["verdicts"]
    assert deliver() == [follow_up, first]  # the first job's SR again, with the new verdict
    with session_scope(url) as session:
        verdict = session.scalars(select(Study)).one().verdict
        assert verdict["images"] == 2 and verdict["jobs"] == sorted([first, follow_up])
        old = session.scalars(
            select(Result.probability).join(Scan).where(Scan.job_id == first)
        ).all()
        assert sorted(old) == [0.05, 0.95]  # kept on the first job for the record
    ct.instances[1].PixelData = ct_series(_pngs(tmp_path, 4)[3:]).instances[0].PixelData
    assert _stow(client, ct.files()[1:]).status_code == 200  # the first job's last instance
    _age_studies(app)
    (last,) = _sweep(app, [])["jobs"]
    _score(app, last, [0.02])
    assert _sweep(app, [])["verdicts"]
    assert deliver() == [last, follow_up]  # the first job shows nothing now: not resent


def test_another_user_sees_neither_the_study_nor_its_patient_fields(app, client, tmp_path):
    from db.accounts import create_token, ensure_user
    from db.session import session_scope

    ct = ct_series(_pngs(tmp_path, 1), patient_id="SECRET-PID")
    assert _stow(client, ct.files()).status_code == 200
    with session_scope(_settings(app).database_url) as session:
        token = create_token(session, ensure_user(session, "someone", "user"))
    other = app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    assert other.get("/api/v1/studies").json["total"] == 0
    study_id = client.get("/api/v1/studies").json["items"][0]["id"]
    assert other.get(f"/api/v1/studies/{study_id}").status_code == 404
    assert b"SECRET-PID" not in other.get("/studies").data
    assert b"SECRET-PID" in client.get("/studies").data
    assert other.get(f"/studies/{study_id}").status_code == 404
    page = client.get(f"/studies/{study_id}").data
    assert b"SECRET-PID" in page and b"Research use only" in page


def test_receipts_and_refusals_are_audited_and_patient_data_never_logged(
    app, client, tmp_path, caplog
):
    import logging

    from sqlalchemy.exc import IntegrityError

    from db.models import Study
    from db.session import session_scope

    caplog.set_level(logging.DEBUG)
    ct = ct_series(_pngs(tmp_path, 2), patient_id="SECRET-PID", accession="SECRET-ACC")
    assert _stow(client, ct.files()[:1]).status_code == 200
    assert _stow(client, ct.files()[1:], path="/dicomweb/studies/1.2.3.4").status_code == 409
    _age_studies(app)
    assert _sweep(app, [])["jobs"]
    trail = {e["action"]: e for e in client.get("/api/v1/audit").json["items"]}
    assert trail["dicom_receive"]["detail"] == {"via": "stow-rs", "instances": 1}
    refused = trail["dicom_refuse"]["detail"]
    assert refused["instances"] == 1 and "not to the study 1.2.3.4" in refused["reasons"][0]
    url = _settings(app).database_url
    with pytest.raises(IntegrityError) as failed, session_scope(url) as session:
        study = session.scalars(select(Study)).one()
        session.add(Study(study_uid=study.study_uid, owner=study.owner, source="stow",
                          patient_id="SECRET-PID2"))  # fmt: skip
    assert "SECRET" not in str(failed.value)  # database errors carry no parameters
    assert "SECRET" not in caplog.text


def test_a_part_without_the_part10_preamble_is_stored_with_it(app, client, tmp_path):
    """dicomweb-client writes in-memory datasets with pydicom's dcmwrite, which leaves
    out the 128-byte preamble and "DICM"; such an instance is still a study's."""
    import io

    import pydicom

    from db.models import StudyInstance
    from db.session import session_scope

    study = ct_series(_pngs(tmp_path, 1))
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, study.instances[0])
    assert buf.getvalue()[128:132] != b"DICM"
    assert _stow(client, [buf.getvalue()]).status_code == 200
    settings = _settings(app)
    with session_scope(settings.database_url) as session:
        stored = session.scalars(select(StudyInstance)).one().stored_path
    assert (settings.data_dir / stored).read_bytes()[128:132] == b"DICM"


def test_peers_and_sources_are_managed_by_admins_through_the_api(app, client):
    from db.accounts import create_token, ensure_user
    from db.session import session_scope

    made = client.post(
        "/api/v1/dicom/peers",
        json={"ae_title": "ORTHANC", "host": "pacs", "port": 4242, "user": "tester"},
    )
    assert made.status_code == 201 and made.json["ae_title"] == "ORTHANC"
    bad = client.post(
        "/api/v1/dicom/peers",
        json={"ae_title": "X" * 17, "host": "pacs", "port": 4242, "user": "tester"},
    )
    assert bad.status_code == 400 and "16" in bad.json["error"]["message"]
    nobody = client.post(
        "/api/v1/dicom/peers", json={"ae_title": "B", "host": "h", "port": 1, "user": "ghost"}
    )
    assert nobody.status_code == 400 and "ghost" in nobody.json["error"]["message"]
    assert [p["ae_title"] for p in client.get("/api/v1/dicom/peers").json["items"]] == ["ORTHANC"]
    source = client.post("/api/v1/dicom/sources", json={"name": "pacs", "url": "ftp://x"})
    assert source.status_code == 400
    with session_scope(_settings(app).database_url) as session:
        token = create_token(session, ensure_user(session, "plain", "user"))
    other = app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    assert other.get("/api/v1/dicom/peers").status_code == 403
    assert client.delete("/api/v1/dicom/peers/ORTHANC").status_code == 204
    assert client.delete("/api/v1/dicom/peers/ORTHANC").status_code == 404


def test_a_pull_request_is_checked_before_it_is_queued(app, client):
    unknown = client.post("/api/v1/pulls", json={"source": "nowhere", "modality": "DX"})
    assert unknown.status_code == 404
    assert (
        client.post(
            "/api/v1/dicom/sources", json={"name": "pacs", "url": "http://127.0.0.1:1/dicom-web"}
        ).status_code
        == 201
    )
    empty = client.post("/api/v1/pulls", json={"source": "pacs"})
    assert empty.status_code == 400 and "say what to pull" in empty.json["error"]["message"]
    bad_date = client.post("/api/v1/pulls", json={"source": "pacs", "since": "30/11/2026"})
    assert bad_date.status_code == 400 and "YYYY-MM-DD" in bad_date.json["error"]["message"]
    no_queue = client.post("/api/v1/pulls", json={"source": "pacs", "modality": "DX"})
    assert no_queue.status_code == 503  # the app fixture's Redis is unreachable


def test_an_instance_whose_pixels_cannot_be_decoded_fails_alone(app, client, tmp_path):
    from db.models import Job, Result, Scan
    from db.session import session_scope

    ct = ct_series(_pngs(tmp_path, 2))
    ct.instances[1].PixelData = b"\x00\x01" * 10  # far fewer bytes than Rows x Columns
    assert _stow(client, ct.files()).status_code == 200  # the header is fine: accepted
    _age_studies(app)
    (job_id,) = _sweep(app, [])["jobs"]
    with session_scope(_settings(app).database_url) as session:
        job = session.get(Job, job_id)
        assert job.total == 2 and job.failed == 1
        (error,) = session.scalars(
            select(Result.error).join(Scan).where(Scan.job_id == job_id, Result.error.is_not(None))
        )
        assert "pixel" in error.lower() or "decode" in error.lower(), error


@BOTH_DATABASES
def test_instances_of_a_job_whose_settling_died_are_screened_again(app, client, tmp_path):
    """A settling process that dies after claiming a study's instances leaves a job
    `receiving` with no scans; once the reconciler fails it as a stalled upload, the
    next sweep gives the instances a new job."""
    from db.jobs import fail_stalled_uploads, open_inference_job
    from db.models import StudyInstance, utcnow
    from db.registry import active_version
    from db.session import session_scope
    from db.studies import claim_pending

    ct = ct_series(_pngs(tmp_path, 2))
    assert _stow(client, ct.files()).status_code == 200
    url = _settings(app).database_url
    with session_scope(url) as session:  # what a sweep does before it dies
        study_id = session.scalars(select(StudyInstance.study_id)).first()
        job = open_inference_job(session, "ct", active_version(session, "ct").id, "tester")
        assert len(claim_pending(session, study_id, "ct", job.id)) == 2
        dead = job.id
    with session_scope(url) as session:
        assert fail_stalled_uploads(session, utcnow() + timedelta(seconds=1)) == [dead]
    _age_studies(app)
    (job_id,) = _sweep(app, [])["jobs"]
    assert job_id != dead
    with session_scope(url) as session:
        assert set(session.scalars(select(StudyInstance.job_id))) == {job_id}
