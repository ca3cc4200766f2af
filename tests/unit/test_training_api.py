"""Training requests and the registry through the JSON API on a real SQLite database.
No broker listens here: an accepted run must still be kept (queued) in SQL."""

import io
from datetime import timedelta

from sqlalchemy import select

from db.jobs import store_results
from db.models import Job, ModelVersion, Scan, utcnow
from db.registry import register_version
from db.session import session_scope
from db.training_jobs import (
    claim_training_job,
    fail_stalled_training,
    record_epoch,
    unsent_training_jobs,
)
from tests.helpers import png, zip_of
from tests.unit.test_api import post_job


def _archive(n=5):
    entries = {f"covid/c{i}.png": png(i) for i in range(n)}
    entries |= {f"non_covid/n{i}.png": png(50 + i) for i in range(n)}
    return zip_of(entries)


def post_training(client, archive=None, **fields):
    data = {"modality": "ct", **fields}
    if archive is not None:
        data["dataset"] = (io.BytesIO(archive), "set.zip")
    return client.post("/api/v1/training-jobs", data=data, content_type="multipart/form-data")


def test_training_request_is_kept_queued_with_its_settings(client, app):
    resp = post_training(client, _archive(), backbone="smallcnn", epochs="3",
                         finetune_epochs="0", input_size="64", activate="true")  # fmt: skip
    assert resp.status_code == 202, resp.json
    job_id = resp.json["id"]
    assert resp.headers["Location"] == f"/api/v1/jobs/{job_id}"
    assert resp.json["dataset"]["n"] == 10 and resp.json["dataset"]["n_patients"] == 10
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert (job["kind"], job["status"], job["total"]) == ("training", "queued", 3)
    config = job["options"]["config"]
    assert (config["backbone"], config["epochs"], config["input_size"]) == ("smallcnn", 3, 64)
    assert job["options"]["activate"] is True
    assert job["options"]["dataset"].startswith("datasets/")
    listed = client.get("/api/v1/jobs?kind=training").json["items"]
    assert [j["id"] for j in listed] == [job_id]
    assert client.get("/api/v1/jobs?kind=inference").json["items"] == []
    with session_scope(app.config["SCANQ_SETTINGS"].database_url) as s:
        # never sent (no broker): the reconciler finds it once it is old enough
        assert unsent_training_jobs(s, utcnow() + timedelta(seconds=1)) == [job_id]
        assert unsent_training_jobs(s, utcnow() - timedelta(minutes=5)) == []


def test_bad_training_requests_get_json_errors(client, app, tmp_path):
    ok = _archive()
    cases = [
        (post_training(client, ok, modality="mri"), 400, "bad_modality"),
        (post_training(client, ok, backbone="alexnet"), 400, "bad_backbone"),
        (post_training(client, ok, epochs="zero"), 400, "bad_epochs"),
        (post_training(client, ok, epochs="0"), 400, "bad_epochs"),
        (post_training(client, ok, learning_rate="5"), 400, "bad_learning_rate"),
        (post_training(client, ok, input_size="8"), 400, "bad_input_size"),
        (post_training(client, ok, activate="maybe"), 400, "bad_activate"),
        (post_training(client, ok, weights="imagenet"), 400, "bad_weights"),
        (post_training(client, ok, recipe="magic"), 400, "bad_recipe"),
        (post_training(client, ok, probe_pool="max"), 400, "bad_probe_pool"),
        (post_training(client, ok, recipe="probe", probe_scales="big"), 400, "bad_probe_scales"),
        (post_training(client, ok, recipe="probe", probe_scales="224"), 400, "bad_probe_scales"),
        (post_training(client, ok, recipe="probe", probe_scales="9"), 400, "bad_probe_scales"),
        (post_training(client, ok, probe_scales="288"), 400, "bad_probe_scales"),  # finetune
        (
            post_training(client, ok, recipe="probe", probe_imagenet_view="16"),
            400,
            "bad_probe_imagenet_view",
        ),
        (
            post_training(client, ok, recipe="probe", probe_imagenet_view="big"),
            400,
            "bad_probe_imagenet_view",
        ),
        (post_training(client, ok, probe_imagenet_view="224"), 400, "bad_probe_imagenet_view"),
        (post_training(client), 400, "no_dataset"),
        (post_training(client, ok, data_path=str(tmp_path)), 400, "no_dataset"),
        (post_training(client, _archive(2)), 422, "dataset_unusable"),
        (post_training(client, data_path=str(tmp_path)), 422, "dataset_unusable"),
        (post_training(client, b"not a zip at all"), 422, "dataset_unusable"),
    ]
    for resp, status, code in cases:
        assert resp.status_code == status, (code, resp.json)
        assert resp.json["error"]["code"] == code
        assert resp.json["error"]["message"]


def test_training_form_page_starts_a_run_or_shows_the_error(client):
    data = {"modality": "xray", "dataset": (io.BytesIO(_archive()), "set.zip")}
    resp = client.post("/train", data=data, content_type="multipart/form-data")
    assert resp.status_code == 303
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "waiting for a training worker" in page and "epoch 0 of at most 45" in page
    bad = client.post("/train", data={"modality": "xray"}, content_type="multipart/form-data")
    assert bad.status_code == 400 and "send a .zip" in bad.get_data(as_text=True)


def test_run_is_claimed_once_and_a_silent_one_is_failed(client, app):
    job_id = post_training(client, _archive()).json["id"]
    url = app.config["SCANQ_SETTINGS"].database_url
    with session_scope(url) as s:
        assert claim_training_job(s, job_id) is not None
        assert claim_training_job(s, job_id) is None  # a re-sent message does nothing
        assert record_epoch(s, job_id, 1, {"loss": 0.7, "val_auc": 0.6}) == "running"
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert job["done"] == 1 and job["progress"]["epochs"][0]["val_auc"] == 0.6
    with session_scope(url) as s:
        assert fail_stalled_training(s, utcnow() - timedelta(minutes=5)) == []
        assert fail_stalled_training(s, utcnow() + timedelta(seconds=1)) == [job_id]
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert job["status"] == "failed" and "stopped reporting" in job["error"]


def test_versions_in_use_cannot_be_deleted(client, app):
    settings = app.config["SCANQ_SETTINGS"]
    card = {"modality": "xray", "backbone": "smallcnn", "input_size": 64, "threshold": 0.5}
    folder = settings.data_dir / "model_versions" / "t1"
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"x")
    with session_scope(settings.database_url) as s:
        unused = register_version(s, card, "model_versions/t1", training_job_id="t1").id
        used = register_version(s, card, "model_versions/t2", training_job_id="t2").id
        builtin = s.scalars(select(ModelVersion.id).where(ModelVersion.modality == "xray")).first()
    job_id = post_job(client, [("a.png", png())], model_version=str(used)).json["id"]
    with session_scope(settings.database_url) as s:
        scan = s.scalars(select(Scan).where(Scan.job_id == job_id)).one()
        store_results(s, [{"scan_id": scan.id, "job_id": job_id, "probability": 0.2,
                           "label": "non_covid", "model_version_id": used}])  # fmt: skip
    active = next(m for m in client.get("/api/v1/models").json["items"] if m["active"])
    for version_id, reason in ((used, "scored"), (builtin, "shipped"), (active["id"], "")):
        resp = client.delete(f"/api/v1/models/{version_id}")
        assert resp.status_code == 409, resp.json
        assert resp.json["error"]["code"] == "model_version_in_use"
        assert reason in resp.json["error"]["message"]
    assert client.delete(f"/api/v1/models/{unused}").status_code == 204
    assert not folder.exists()
    assert client.get(f"/api/v1/models/{unused}").status_code == 404
    assert client.delete(f"/api/v1/models/{unused}").status_code == 404
    with session_scope(settings.database_url) as s:
        assert s.get(Job, job_id).model_version_id == used


def test_probe_request_counts_its_steps_not_epochs(client):
    resp = post_training(client, _archive(), recipe="probe", equalize="true", probe_scales="288",
                         probe_imagenet_view="224")  # fmt: skip
    assert resp.status_code == 202, resp.json
    job = client.get(f"/api/v1/jobs/{resp.json['id']}").json
    assert job["total"] == 4 and job["options"]["config"]["recipe"] == "probe"
    assert job["options"]["config"]["equalize"] is True
    assert job["options"]["config"]["probe_scales"] == [288]
    assert job["options"]["config"]["probe_imagenet_view"] == 224
