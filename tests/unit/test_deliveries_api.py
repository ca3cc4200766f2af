"""The delivery API of a study (web/deliveries_api.py) and the delivery rows behind it:
a study nobody may see is a 404, one with nothing ended yet or nowhere to send to is a
409 that says why, a named peer becomes the destination, and each resend raises the
row's generation so retries of an earlier send stand down (db.deliveries.current)."""

from __future__ import annotations

import pytest

from db.deliveries import current
from db.models import DicomDelivery, DicomPeer, Job, Study, StudyJob
from db.session import session_scope


def _db(app):
    return session_scope(app.config["SCANQ_SETTINGS"].database_url)


def _study(app, owner: str = "tester", ended: bool = True, source: str = "stow") -> int:
    with _db(app) as session:
        study = Study(study_uid="1.2.3.99", owner=owner, source=source, status="screened")
        session.add(study)
        session.flush()
        if ended:
            job = Job(modality="xray", owner=owner, status="succeeded")
            session.add(job)
            session.flush()
            session.add(StudyJob(study_id=study.id, job_id=job.id, modality="xray"))
        return study.id


def _peer(app, ae: str = "ARCHIVE") -> None:
    with _db(app) as session:
        session.add(DicomPeer(ae_title=ae, host="127.0.0.1", port=1, owner="tester"))


def test_a_study_with_no_ended_job_has_nothing_to_send(app, client):
    study_id = _study(app, ended=False)
    assert client.get(f"/api/v1/studies/{study_id}/deliveries").json["deliveries"] == []
    answer = client.post(f"/api/v1/studies/{study_id}/send")
    assert answer.status_code == 409 and answer.json["error"]["code"] == "not_screened"


def test_a_study_with_no_destination_says_so(app, client):
    study_id = _study(app, source="stow")
    answer = client.post(f"/api/v1/studies/{study_id}/send")
    assert answer.status_code == 409 and answer.json["error"]["code"] == "no_destination"
    assert "send it to a peer" in answer.json["error"]["message"]
    unknown = client.post(f"/api/v1/studies/{study_id}/send", json={"peer": "NOBODY"})
    assert unknown.status_code == 409 and "NOBODY" in unknown.json["error"]["message"]
    both = client.post(f"/api/v1/studies/{study_id}/send", json={"peer": "A", "dicomweb": "b"})
    assert both.status_code == 400


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_a_named_peer_is_the_destination_and_a_resend_supersedes(app, client):
    _peer(app)
    study_id = _study(app)
    first = client.post(f"/api/v1/studies/{study_id}/send", json={"peer": "ARCHIVE"})
    assert first.status_code == 202
    (row,) = first.json["deliveries"]
    assert row["status"] == "pending" and row["destination"] == "C-STORE ARCHIVE@127.0.0.1:1"
    assert row["protocol"] == "dimse" and row["model_version"] == "unknown"
    with _db(app) as session:
        assert current(session, row["id"], 0) is not None
    again = client.post(f"/api/v1/studies/{study_id}/send")
    assert again.status_code == 202 and [d["id"] for d in again.json["deliveries"]] == [row["id"]]
    with _db(app) as session:
        assert current(session, row["id"], 0) is None  # the first send's retries stand down
        assert current(session, row["id"], 1) is not None
        assert session.get(DicomDelivery, row["id"]).requested_by == "tester"
    trail = client.get("/api/v1/audit").json["items"]
    assert sum(e["action"] == "dicom_send_requested" for e in trail) == 2


def test_someone_elses_study_is_not_found(app):
    from db.accounts import create_token, ensure_user

    study_id = _study(app, owner="tester")
    with _db(app) as session:
        token = create_token(session, ensure_user(session, "other", "user"))
    other = app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    assert other.get(f"/api/v1/studies/{study_id}/deliveries").status_code == 404
    assert other.post(f"/api/v1/studies/{study_id}/send").status_code == 404


def test_the_study_page_button_sends_and_comes_back(app, client):
    _peer(app)
    study_id = _study(app)
    answer = client.post(f"/studies/{study_id}/send", data={"peer": "ARCHIVE"})
    back = answer.headers["Location"]
    assert answer.status_code == 303 and f"/studies/{study_id}" in back and "queued" in back
    (row,) = client.get(f"/api/v1/studies/{study_id}/deliveries").json["deliveries"]
    assert row["destination"].startswith("C-STORE ARCHIVE")
    refused = client.post(f"/studies/{study_id}/send", data={"peer": "NOBODY"})
    assert refused.status_code == 303 and "not+sent" in refused.headers["Location"]
