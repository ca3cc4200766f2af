"""Site monitoring on a real SQLite database (no worker: result rows are written as a
worker writes them): figures from confirmed labels only, counts with no labels, the
card beside the site, the warning, drift windows and PSI, and no TensorFlow in the web
process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from sqlalchemy import select

from db.jobs import refresh_job, store_results
from db.models import Scan
from db.session import session_scope
from models import drift, metrics
from tests.helpers import png


def _scored_job(client, app, probs, ood=None, modality="xray"):
    """A job of len(probs) synthetic images scored with the given probabilities."""
    data = {"modality": modality,
            "files": [(io.BytesIO(png(i)), f"i{i}.png") for i in range(len(probs))]}  # fmt: skip
    job_id = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data").json["id"]
    version = client.get(f"/api/v1/jobs/{job_id}").json["model_version"]
    with session_scope(app.config["SCANQ_SETTINGS"].database_url) as s:
        scans = s.scalars(select(Scan).where(Scan.job_id == job_id).order_by(Scan.position)).all()
        rows = []
        for k, (sc, p) in enumerate(zip(scans, probs, strict=True)):
            score = None if ood is None else float(ood[k])
            rows.append({"scan_id": sc.id, "job_id": job_id, "probability": float(p),
                         "label": "covid" if p >= 0.5 else "non_covid", "model_version_id": version,
                         "ood_score": score, "out_of_distribution": None if score is None
                         else score > 1})  # fmt: skip
        store_results(s, rows)
        refresh_job(s, job_id)
        return [sc.id for sc in scans]


def test_no_confirmed_labels_gives_counts_and_no_figures(client, app):
    _scored_job(client, app, [0.2, 0.7, 0.9])
    resp = client.get("/api/v1/monitoring?modality=xray")
    assert resp.status_code == 200, resp.json
    body = resp.json
    assert body["n_scored"] == 3 and body["n_confirmed"] == 0
    assert (body["n_covid"], body["n_non_covid"]) == (0, 0)
    assert body["auc"] is None and body["auc_ci95"] == [None, None]
    assert body["sensitivity"] is None and body["specificity"] is None
    assert body["card"]["auc"] > 0.5 and body["card"]["split"] == "test"
    assert body["warnings"] == [] and body["drift"]["day"][0]["images"] == 3
    assert client.get("/monitoring?modality=xray").status_code == 200
    for name in ("roc", "reliability", "flagged", "scores", "ood"):
        svg = client.get(f"/api/v1/monitoring/{name}.svg?modality=xray")
        assert svg.status_code == 200 and svg.mimetype == "image/svg+xml", name
        assert svg.get_data(as_text=True).startswith("<svg")


def test_figures_come_from_confirmed_labels_with_the_card_beside_them(client, app):
    rng = np.random.default_rng(0)
    truth = [1] * 14 + [0] * 14
    probs = [float(np.clip(rng.normal(0.62 if t else 0.45, 0.2), 0.01, 0.99)) for t in truth]
    ids = _scored_job(client, app, probs + [0.5, 0.5])  # the last two stay unreviewed
    for k, (sid, t) in enumerate(zip(ids, truth, strict=False)):
        label = "covid" if t else "non_covid"
        resp = client.post(f"/api/v1/results/{sid}/review",
                           json={"label": label, "patient_id": f"p{k // 2}"})  # fmt: skip
        assert resp.status_code == 201, resp.json
    body = client.get("/api/v1/monitoring?modality=xray").json
    assert (body["n_confirmed"], body["n_covid"], body["n_non_covid"]) == (28, 14, 14)
    assert body["n_patients"] == 14 and body["n_scored"] == 30
    assert body["auc"] == round(metrics.roc_auc(truth, probs), 4)
    lo, hi = body["auc_ci95"]
    assert lo <= body["auc"] <= hi
    threshold = body["threshold"]
    c = metrics.confusion(truth, probs, threshold)
    assert body["confusion"] == c
    assert body["sensitivity"] == round(c["tp"] / 14, 4)
    assert sum(b["n"] for b in body["reliability"]) == 28
    # The site's interval lies below the card's test AUC: a plain warning says so.
    if hi < body["card"]["auc"]:
        assert "lies below the model card's test AUC" in body["warnings"][0]
    else:
        assert body["warnings"] == []
    page = client.get("/monitoring?modality=xray").get_data(as_text=True)
    assert "Research use only" in page and f"{body['auc']:.3f}" in page
    # One user's jobs: an admin may ask for another; nobody else's jobs are counted.
    other = client.get("/api/v1/monitoring?modality=xray&user=nobody").json
    assert other["n_confirmed"] == 0 and other["n_scored"] == 0
    future = client.get("/api/v1/monitoring?modality=xray&since=2999-01-01").json
    assert future["n_scored"] == 0


def test_bad_monitoring_queries_are_clear_400s(client):
    cases = (
        ("modality=mri", "bad_modality"),
        ("modality=xray&since=yesterday", "bad_since"),
        ("modality=xray&since=2026-02-01&until=2026-01-01", "bad_range"),
        ("modality=xray&model_version=x", "bad_model_version"),
    )
    for query, code in cases:
        resp = client.get(f"/api/v1/monitoring?{query}")
        assert resp.status_code == 400 and resp.json["error"]["code"] == code, query


def test_psi_is_near_chance_without_drift_and_large_with_it():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 100)
    same = drift.psi(ref, rng.normal(0, 1, 200))
    moved = drift.psi(ref, rng.normal(1.5, 1, 200))
    assert same["excess"] < 0.1 and moved["excess"] > 1.0
    assert same["bins"] == 10 and drift.psi(ref, []) is None
    stats = drift.window_stats([(0.5, 2.0, True)] * 20 + [(0.5, 0.5, False)] * 20, None)
    assert stats["flagged_share"] == 0.5
    assert drift.drift_reasons(stats, 0.25, 0.1, 30)[0].startswith("50% flagged")
    assert drift.drift_reasons(stats, 0.25, 0.1, 41) == []  # too few images to tell


def test_out_of_distribution_batch_raises_the_alert_and_banner(client, app):
    rng = np.random.default_rng(2)
    _scored_job(client, app, list(rng.uniform(0.4, 0.95, 40)), ood=rng.uniform(0.7, 0.9, 40))
    assert client.get("/api/v1/monitoring?modality=xray").json["drift"]["alert"] is False
    _scored_job(client, app, list(rng.uniform(0.4, 0.95, 40)), ood=rng.uniform(1.2, 2.0, 40))
    d = client.get("/api/v1/monitoring?modality=xray").json["drift"]
    assert d["alert"] is True and d["reference"]["status"] == "ready"
    assert any("flagged out of distribution" in r for r in d["alert_reasons"])
    assert d["day"][-1]["ood_psi"]["excess"] > 0.25
    from web import monitoring

    monitoring._banner = (-1e9, [])  # the banner's cache, as after its few seconds
    page = client.get("/jobs").get_data(as_text=True)
    assert 'id="drift-banner-xray"' in page and "Drift alert" in page


def test_monitoring_never_imports_tensorflow(app):
    code = (
        "import sys; from web.app import create_app; app = create_app(); "
        "from db.accounts import create_token, ensure_user; from db.session import session_scope; "
        "s = app.config['SCANQ_SETTINGS']\n"
        "with session_scope(s.database_url) as db:\n"
        "    t = create_token(db, ensure_user(db, 'x', 'admin'))\n"
        "c = app.test_client(); h = {'Authorization': 'Bearer ' + t}\n"
        "assert c.get('/api/v1/monitoring?modality=xray', headers=h).status_code == 200\n"
        "assert c.get('/monitoring', headers=h).status_code == 200\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )  # fmt: skip
    env = {**os.environ, "SCANQ_DATA_DIR": str(app.config["SCANQ_SETTINGS"].data_dir)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_metrics_count_jobs_images_and_labels(client, app):
    ids = _scored_job(client, app, [0.2, 0.9], ood=[0.5, 1.5])
    client.post(f"/api/v1/results/{ids[0]}/review", json={"label": "non_covid"})
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype.startswith("text/plain")
    text = resp.get_data(as_text=True)
    assert 'scanq_jobs{kind="inference",status="succeeded"} 1.0' in text
    assert 'scanq_images_scored_total{modality="xray"} 2.0' in text
    assert 'scanq_images_flagged_ood_total{modality="xray"} 1.0' in text
    assert 'scanq_ood_share{modality="xray"} 0.5' in text
    assert 'scanq_confirmed_labels{agrees_with_model="true",modality="xray"} 1.0' in text
    assert "scanq_batch_queue_seconds_count" in text and "scanq_drift_alert{" in text
    asked = 'scanq_http_requests_total{endpoint="api.api_monitoring",method="GET",status="200"}'

    def answered(body: str) -> float:  # counters of this process live across tests
        line = next((x for x in body.splitlines() if x.startswith(asked)), None)
        return float(line.split()[-1]) if line else 0.0

    before = answered(text)
    client.get("/api/v1/monitoring?modality=xray")
    assert answered(client.get("/metrics").get_data(as_text=True)) == before + 1
    anonymous = app.test_client().get("/metrics")
    assert anonymous.status_code in (302, 401)  # a scraper sends a token like any client


def test_compose_has_prometheus_in_an_optional_profile():
    import json

    from tests.unit.test_compose import config

    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"} | {"SECRET_KEY": "s" * 32}
    plain = config(env, "--format", "json")
    assert plain.returncode == 0, plain.stderr
    assert "prometheus" not in json.loads(plain.stdout)["services"]
    res = config(env, "--format", "json", profile="monitoring")
    assert res.returncode == 0, res.stderr
    services = json.loads(res.stdout)["services"]
    assert services["prometheus"]["secrets"][0]["source"] == "scanq-metrics-token"
    web = services["web"]
    assert "python:web.gunicorn_conf" in web["command"]
    assert web["environment"]["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert web["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    scrape = (Path(__file__).resolve().parents[2] / "prometheus" / "prometheus.yml").read_text()
    assert 'targets: ["web:5000"]' in scrape and 'targets: ["flower:5555"]' in scrape
    assert "credentials_file: /run/secrets/scanq-metrics-token" in scrape
