"""Site monitoring through real processes (Redis, a Celery worker, gunicorn with two
workers, beat): real X-rays scored and their labels confirmed through the review API;
/api/v1/monitoring gives the AUC `scanq evaluate` gives on the same images; a batch of
rotated scans raises the flagged share, the alert, the banner and the metric; a
scheduled `recalibrate` run refuses too few labels, then makes a version with its own
threshold that the gate promotes or keeps with its reason; /metrics counts the jobs and
sums the requests both gunicorn workers answered."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from PIL import Image

from cli.processes import beat_command
from tests.conftest import Stack, free_port, sample_images

N_EACH = 20  # X-rays of each label: enough for SCANQ_RECALIBRATE_MIN=30 and two halves


@pytest.fixture(scope="module")
def mon_stack(tmp_path_factory, redis_url):
    s = Stack(tmp_path_factory.mktemp("monitoring"), redis_url, free_port(), None)
    s.env |= {"SCANQ_RECALIBRATE_MIN": "30", "SCANQ_DRIFT_MIN_IMAGES": "20",
              "SCANQ_BEAT_INTERVAL": "1"}  # fmt: skip
    s.start()
    yield s
    s.stop()


def _patients(shared_data) -> dict[str, str]:
    with open(shared_data / "xray" / "labels.csv", newline="") as fh:
        return {row["path"].rsplit("/", 1)[-1]: row["patient_id"] for row in csv.DictReader(fh)}


def _submit(stack, files: list[tuple[str, bytes]]) -> dict:
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", data={"modality": "xray"},
                           files=[("files", f) for f in files])  # fmt: skip
    assert resp.status_code == 202, resp.text
    job = stack.wait_job(resp.json()["id"])
    assert job["status"] == "succeeded", stack.log("worker")
    return job


def _monitoring(stack, **params) -> dict:
    resp = stack.http.get(f"{stack.url}/api/v1/monitoring", params={"modality": "xray", **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _rotated(path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("L").rotate(90, expand=True).save(buf, "PNG")
    return buf.getvalue()


def test_site_performance_drift_recalibration_and_metrics(mon_stack, shared_data, tmp_path):
    stack = mon_stack
    truth = {p.name: (p, label) for label in ("covid", "non_covid")
             for p in sample_images(shared_data, "xray", label, N_EACH)}  # fmt: skip
    patients = _patients(shared_data)
    job = _submit(stack, [(name, p.read_bytes()) for name, (p, _) in truth.items()])
    items = stack.http.get(f"{stack.url}/api/v1/jobs/{job['id']}/results").json()["items"]
    assert len(items) == 2 * N_EACH and all(i["probability"] is not None for i in items)

    empty = _monitoring(stack)  # scored, nothing confirmed: counts, no figures
    assert empty["n_scored"] == 2 * N_EACH and empty["n_confirmed"] == 0
    assert empty["auc"] is None and empty["card"]["auc"] is not None

    def confirm(batch):
        for item in batch:
            name = item["filename"]
            resp = stack.http.post(
                f"{stack.url}/api/v1/results/{item['scan_id']}/review",
                json={"label": truth[name][1], "patient_id": patients[name]},
            )
            assert resp.status_code == 201, resp.text

    # Too few labels: a recalibration is refused before anything is queued.
    confirm(items[:10])
    refused = stack.http.post(f"{stack.url}/api/v1/training-jobs",
                              data={"modality": "xray", "recipe": "recalibrate"})  # fmt: skip
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] in ("too_few_labels", "one_class_only")
    cli = stack.scanq("train", "--modality", "xray", "--recipe", "recalibrate", timeout=60)
    assert cli.returncode != 0 and "at least 30 confirmed labels" in cli.stderr, cli.stderr
    confirm(items[10:])

    # The site's AUC is the one `scanq evaluate` gives on the same images.
    site = _monitoring(stack)
    assert (site["n_confirmed"], site["n_covid"], site["n_non_covid"]) == (40, 20, 20)
    data = tmp_path / "set"
    for name, (p, label) in truth.items():
        (data / label).mkdir(parents=True, exist_ok=True)
        (data / label / name).write_bytes(p.read_bytes())
    run = stack.scanq("evaluate", "--modality", "xray", "--data", str(data), "--json",
                      timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    evaluated = json.loads(run.stdout.strip().splitlines()[-1])
    assert evaluated["n"] == site["n_confirmed"]
    assert abs(evaluated["auc"] - site["auc"]) <= 0.002, (evaluated["auc"], site["auc"])
    lo, hi = site["auc_ci95"]
    assert lo <= site["auc"] <= hi and site["n_patients"] <= 40
    assert site["sensitivity"] is not None and site["specificity"] is not None
    assert sum(site["confusion"].values()) == 40
    for name in ("roc", "reliability", "flagged", "scores", "ood"):
        svg = stack.http.get(stack.url + site["links"][name])
        assert svg.status_code == 200 and svg.text.startswith("<svg"), name
    page = stack.http.get(f"{stack.url}/monitoring?modality=xray").text
    assert "Research use only" in page and f"{site['auc']:.3f}" in page

    # Drift: the day's share flagged out of distribution jumps with rotated scans.
    before = site["drift"]["day"][-1]
    assert before["images"] == 40 and site["drift"]["reference"]["status"] == "ready"
    assert not any("flagged" in r for r in before["alert_reasons"])
    rotated = [(f"rot_{name}", _rotated(p)) for name, (p, _) in list(truth.items())[:20]]
    _submit(stack, rotated)
    drifted = _monitoring(stack)["drift"]
    after = drifted["day"][-1]
    assert after["images"] == 60 and after["flagged_share"] > before["flagged_share"] + 0.1
    assert drifted["alert"] and any("flagged out of distribution" in r
                                    for r in drifted["alert_reasons"])  # fmt: skip
    deadline = time.monotonic() + 60  # the banner's cache lives a few seconds per process
    while 'id="drift-banner-xray"' not in stack.http.get(f"{stack.url}/jobs").text:
        assert time.monotonic() < deadline, "no drift banner"
        time.sleep(1)

    # A schedule runs the recalibration; the gate promotes or keeps it, with its reason.
    champion = site["model_version"]
    made = stack.http.post(f"{stack.url}/api/v1/schedules",
                           json={"name": "recalibrate xray", "modality": "xray",
                                 "recipe": "recalibrate", "interval_seconds": 3,
                                 "min_new_labels": 1})  # fmt: skip
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    beat = stack.spawn("beat", beat_command())

    def trained() -> dict | None:
        runs = stack.http.get(f"{stack.url}/api/v1/schedules/{sid}/runs").json()["items"]
        return next((r for r in runs if r["training_job"] and r["status"] != "training"), None)

    deadline = time.monotonic() + 180
    while (run := trained()) is None:
        assert time.monotonic() < deadline, stack.log("worker") + stack.log("beat")
        time.sleep(1)
    stack.http.patch(f"{stack.url}/api/v1/schedules/{sid}", json={"enabled": False})
    beat.terminate()
    assert run["status"] in ("promoted", "kept"), (run, stack.log("worker"))
    assert "recalibration keeps the ranking" in run["reason"] and "threshold" in run["reason"]
    assert run["champion_version"] == champion and run["challenger_version"] != champion
    models = {m["id"]: m for m in stack.http.get(f"{stack.url}/api/v1/models").json()["items"]}
    new = models[run["challenger_version"]]
    assert new["threshold"] != models[champion]["threshold"]
    assert new["active"] == (run["status"] == "promoted")
    report = run["report"]
    print(
        f"site AUC {site['auc']} {site['auc_ci95']}, evaluate {evaluated['auc']}; flagged "
        f"{before['flagged_share']} -> {after['flagged_share']}; {run['status']}: {run['reason']}"
    )
    assert report["challenger"]["auc"] == report["champion"]["auc"]  # same ranking
    assert report["challenger"]["n"] + report["champion"]["n"] <= 80

    # /metrics: the jobs, the images and the requests both gunicorn workers answered.
    before_scrape = _metric(stack, 'scanq_http_requests_total{endpoint="api.api_monitoring",'
                                   'method="GET",status="200"}')  # fmt: skip
    for _ in range(6):
        _monitoring(stack)
    text = stack.http.get(f"{stack.url}/metrics").text
    assert 'scanq_jobs{kind="inference",status="succeeded"} 2.0' in text
    assert 'scanq_images_scored_total{modality="xray"} 60.0' in text
    assert 'scanq_drift_alert{modality="xray",model_version="' in text
    assert _metric(stack, 'scanq_http_requests_total{endpoint="api.api_monitoring",'
                          'method="GET",status="200"}') == before_scrape + 6  # fmt: skip
    assert any((stack.data_dir / "run" / "prometheus").glob("counter_*.db"))


def _metric(stack, prefix: str) -> float:
    for line in stack.http.get(f"{stack.url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0
