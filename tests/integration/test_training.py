"""Training through real processes: `scanq train` uploads a labelled set of real CT
slices, a real Celery worker trains a tiny model on the training queue, the registry
gets a new version with its report, and activate/rollback switch what scores a job.
A training worker killed mid-run ends in a clean failure, never in a second run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import replace

from models import ood_sets
from scanq.settings import load_settings
from tests.conftest import sample_images
from worker.celery_app import RECONCILE, create_celery

TINY = ["--backbone", "smallcnn", "--input-size", "48", "--finetune-epochs", "0"]


def _labelled_folder(root, shared_data, n=8, modality="ct"):
    """covid/ and non_covid/ dev images (CT slices unless said) with a labels.csv naming
    their patients."""
    lines = ["filename,label,patient_id"]
    for label in ("covid", "non_covid"):
        (root / label).mkdir(parents=True)
        for i, p in enumerate(sample_images(shared_data, modality, label, n)):
            (root / label / p.name).write_bytes(p.read_bytes())
            lines.append(f"{label}/{p.name},{label},{label}-{i}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _models(stack) -> dict[int, dict]:
    items = stack.http.get(f"{stack.url}/api/v1/models").json()["items"]
    return {m["id"]: m for m in items}


def test_train_activate_score_and_roll_back(stack, shared_data, tmp_path):
    data = _labelled_folder(tmp_path / "set", shared_data)
    before = _models(stack)
    old_active = next(m["id"] for m in before.values() if m["active"] and m["modality"] == "ct")

    run = stack.scanq("train", "--modality", "ct", "--data", str(data), *TINY, "--epochs", "3",
                      "--wait", timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr + stack.log("worker")
    job_id = run.stdout.strip().splitlines()[-1]
    assert "training on 16 images (8 covid, 8 non_covid, 16 patients)" in run.stderr
    job = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["kind"] == "training"
    epochs = job["progress"]["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    assert 1 <= len(epochs) <= 3 and all("loss" in e and "val_auc" in e for e in epochs)

    new = _models(stack)[job["model_version"]]
    assert new["id"] not in before and new["training_job"] == job_id
    assert (new["modality"], new["backbone"], new["input_size"]) == ("ct", "smallcnn", 48)
    assert not new["active"]  # not asked to activate
    assert 0.0 <= new["auc"] <= 1.0 and len(new["metrics"]["test"]["auc_ci95"]) == 2
    for link in new["links"].values():
        img = stack.http.get(stack.url + link)
        assert img.status_code == 200 and img.content.startswith(b"\x89PNG")
    page = stack.http.get(f"{stack.url}/jobs/{job_id}").text
    assert "Val AUC" in page and f"v{new['id']}" in page

    # the new version brings its own out-of-distribution calibration, measured
    ood = new["metrics"]["ood"]
    assert ood["flag_rates"]["blank_frames"]["rate"] == 1.0 and ood["threshold"] > 0

    # activate the new version: the next job is scored by it ...
    assert stack.http.post(f"{stack.url}/api/v1/models/{new['id']}/activate").json()["active"]
    images = sample_images(shared_data, "ct", "covid", 3)
    files = [("files", (p.name, p.read_bytes())) for p in images]
    files.append(("files", ("blank.png", ood_sets.png_bytes(ood_sets.blank(1)[0]))))
    done, items = _score_ct(stack, files)
    assert done["model_version"] == new["id"]
    assert {i["model_version"] for i in items} == {new["id"]}

    # ... and one command rolls back; the version that scored a job cannot be deleted.
    back = stack.scanq("models", "activate", str(old_active))
    assert back.returncode == 0, back.stderr
    assert _models(stack)[old_active]["active"] and not _models(stack)[new["id"]]["active"]
    # Each version judged the same files with its own calibration; the blank frame is
    # flagged under both.
    _, old_items = _score_ct(stack, files)
    for a, b in zip(items, old_items, strict=True):
        assert a["ood_score"] is not None and b["ood_score"] is not None
        assert a["ood_score"] != b["ood_score"]
    assert items[-1]["out_of_distribution"] and old_items[-1]["out_of_distribution"]
    assert not any(i["out_of_distribution"] for i in old_items[:-1])
    refused = stack.scanq("models", "delete", str(new["id"]))
    assert refused.returncode != 0 and "model_version_in_use" in refused.stderr


def _score_ct(stack, files) -> tuple[dict, list[dict]]:
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", files=files, data={"modality": "ct"})
    done = stack.wait_job(resp.json()["id"])
    assert done["status"] == "succeeded", stack.log("worker")
    items = stack.http.get(f"{stack.url}/api/v1/jobs/{done['id']}/results").json()["items"]
    order = [f[1][0] for f in files]
    return done, sorted(items, key=lambda i: order.index(i["filename"]))


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_killed_training_worker_fails_cleanly_and_never_reruns(stack, shared_data, tmp_path):
    data = _labelled_folder(tmp_path / "set", shared_data)
    run = stack.scanq("train", "--modality", "ct", "--data", str(data), *TINY, "--epochs", "400",
                      timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}").json()
        if job["done"] >= 2:
            break
        time.sleep(0.3)
    assert job["status"] == "running" and job["done"] >= 2, (job, stack.log("worker"))

    for child in _children(stack.worker.pid):  # the prefork child running the task
        os.kill(child, signal.SIGKILL)
    time.sleep(3)
    stalled = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}").json()
    assert stalled["status"] == "running"  # nothing has noticed yet

    celery = create_celery(replace(load_settings(), redis_url=stack.env["REDIS_URL"]))
    celery.send_task(RECONCILE, kwargs={"training_stall_seconds": 2})
    final = stack.wait_job(job_id, timeout=120)
    assert final["status"] == "failed" and "stopped reporting" in final["error"]
    time.sleep(2)  # a redelivered run would start over from epoch 1 here
    after = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}").json()
    assert after["progress"]["epochs"] == final["progress"]["epochs"]
    assert after["status"] == "failed" and after["model_version"] is None


def test_cancel_stops_a_running_training_job(stack, shared_data, tmp_path):
    data = _labelled_folder(tmp_path / "set", shared_data)
    run = stack.scanq("train", "--modality", "ct", "--data", str(data), *TINY, "--epochs", "400",
                      timeout=120)  # fmt: skip
    job_id = run.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 240
    while stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}").json()["done"] < 1:
        assert time.monotonic() < deadline, stack.log("worker")
        time.sleep(0.3)
    assert stack.http.post(f"{stack.url}/api/v1/jobs/{job_id}/cancel").status_code == 200
    # The only worker process is the one that was training: a scoring job can finish only
    # once the run has really stopped.
    images = sample_images(shared_data, "ct", "non_covid", 2)
    files = [("files", (p.name, p.read_bytes())) for p in images]
    scored = stack.http.post(f"{stack.url}/api/v1/jobs", files=files, data={"modality": "ct"})
    assert stack.wait_job(scored.json()["id"], timeout=120)["status"] == "succeeded"
    job = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["model_version"] is None
    assert job["done"] < 400


def test_probe_recipe_through_the_queue(stack, shared_data, tmp_path):
    data = _labelled_folder(tmp_path / "set", shared_data)
    run = stack.scanq("train", "--modality", "ct", "--data", str(data), "--recipe", "probe",
                      "--equalize", "--backbone", "smallcnn", "--input-size", "48", "--wait",
                      timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr + stack.log("worker")
    job = stack.http.get(f"{stack.url}/api/v1/jobs/{run.stdout.split()[-1]}").json()
    assert job["status"] == "succeeded" and job["done"] == job["total"] == 4
    version = _models(stack)[job["model_version"]]
    assert version["metrics"]["config"]["recipe"] == "probe"
    assert version["metrics"]["config"]["equalize"] is True


def test_a_lung_crop_version_is_trained_scored_and_explained_on_its_lung_fields(
    stack, shared_data, tmp_path
):
    """#22 point 4: `--lung-crop` trains on lung fields; the version's card records the
    margin and a shortcut report made the same way; the worker scores full X-rays (ONNX
    Runtime here) with a lung share against the whole image's lungs, and TensorFlow
    scores them alike."""
    import json

    import numpy as np
    from sqlalchemy import select

    from db.models import ModelVersion
    from db.session import session_scope
    from models.lung.share import shares_for_scoring
    from models.predictor import Predictor
    from models.preprocess import load_for_model

    data = _labelled_folder(tmp_path / "set", shared_data, modality="xray")
    run = stack.scanq("train", "--modality", "xray", "--data", str(data), "--recipe", "probe",
                      "--input-size", "64", "--probe-c", "0.1", "--lung-crop", "0.15", "--wait",
                      timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr + stack.log("worker")
    job = stack.http.get(f"{stack.url}/api/v1/jobs/{run.stdout.split()[-1]}").json()
    assert job["status"] == "succeeded", stack.log("worker")
    card = _models(stack)[job["model_version"]]["metrics"]
    assert card["config"]["lung_crop"] == 0.15
    shortcut = card["shortcut"]
    assert shortcut["lung_crop"] == 0.15
    assert all(0 <= shortcut[k] <= 1 for k in ("auc", "auc_lungs_hidden", "auc_lungs_only"))

    images = sample_images(shared_data, "xray", "covid", 3)
    images += sample_images(shared_data, "xray", "non_covid", 2)
    files = [("files", (p.name, p.read_bytes())) for p in images]
    fields = {"modality": "xray", "model_version": job["model_version"]}
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", files=files, data=fields)
    done = stack.wait_job(resp.json()["id"])
    assert done["status"] == "succeeded" and done["done"] == 5, stack.log("worker")
    items = stack.http.get(f"{stack.url}/api/v1/jobs/{done['id']}/results").json()["items"]
    items.sort(key=lambda i: [p.name for p in images].index(i["filename"]))
    shares = [i["lung_heat_share"] for i in items]
    # Lite0's ImageNet features make the run repeatable (a random smallcnn's maps often had
    # no mass); a map of an image every position pushes towards non_covid has none either.
    measured = [s for s in shares if s is not None]
    assert measured and all(0.0 <= s <= 1.0 for s in measured), (shares, stack.log("worker"))

    worker_log = (stack.logs / "worker.log").read_text(errors="replace")
    assert re.search(rf"loaded model version {job['model_version']} \(.*runtime onnx", worker_log)

    # TensorFlow, in this process, feeds the version the same lung fields.
    with session_scope(f"sqlite:///{stack.data_dir / 'scanq.sqlite3'}") as s:
        row = select(ModelVersion.path, ModelVersion.temperature).where(
            ModelVersion.id == job["model_version"]
        )
        path, temperature = s.execute(row).one()
    folder = stack.data_dir / path
    export = json.loads((folder / "model.onnx.json").read_text())  # checked on lung fields
    assert export["status"] == "ok", export
    tf = Predictor(folder, batch_size=8, temperature=temperature)
    assert tf.lung_field is not None and tf.lung_field.margin == 0.15
    x = np.stack([load_for_model(p, 64) for p in images])
    probs, _verdicts, maps = tf.predict_judge_and_map(x)
    assert maps.shape == (5, 64, 64)
    np.testing.assert_allclose(probs, [i["probability"] for i in items], atol=1e-3)
    tf_shares = shares_for_scoring(tf, x, maps)
    assert [s is None for s in tf_shares] == [s is None for s in shares]
    np.testing.assert_allclose([s for s in tf_shares if s is not None], measured, atol=0.02)

    # The explain task draws the map back on the whole image.
    heat = f"{stack.url}/api/v1/results/{items[0]['scan_id']}/heatmap.png"
    deadline = time.monotonic() + 120
    while (got := stack.http.get(heat)).status_code != 200:
        assert time.monotonic() < deadline, (got.status_code, stack.log("worker"))
        time.sleep(0.5)
    assert got.content.startswith(b"\x89PNG")
