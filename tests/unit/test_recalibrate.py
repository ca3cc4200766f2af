"""The `recalibrate` recipe on a real SQLite database: refused with the reason before
anything is queued (too few labels, one class only), then run as the training task
runs it (in this process, without a broker): a new version with the parent's weights,
its own threshold and card, and the gate's decision recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import select

from db.models import AuditEvent, Job, ModelVersion
from db.session import session_scope
from db.training_jobs import claim_training_job
from models import recalibrate as rc
from tests.unit.test_monitoring import _scored_job


def _review(client, ids, truth):
    for k, (sid, t) in enumerate(zip(ids, truth, strict=True)):
        resp = client.post(
            f"/api/v1/results/{sid}/review",
            json={"label": "covid" if t else "non_covid", "patient_id": f"p{k}"},
        )
        assert resp.status_code == 201, resp.json


def _recalibrate(client, **extra):
    return client.post(
        "/api/v1/training-jobs", data={"modality": "xray", "recipe": "recalibrate", **extra}
    )


def test_refused_with_the_reason_before_queueing(client, app, monkeypatch):
    ids = _scored_job(client, app, [0.7] * 6)
    _review(client, ids, [1] * 6)
    resp = _recalibrate(client)
    assert resp.status_code == 422 and resp.json["error"]["code"] == "too_few_labels"
    assert "at least 50 confirmed labels" in resp.json["error"]["message"]
    with session_scope(app.config["SCANQ_SETTINGS"].database_url) as s:
        assert s.scalar(select(Job).where(Job.kind == "training")) is None
    with pytest.raises(rc.Refused, match="all 6 confirmed labels are covid"):
        rc.check([rc.Label(0.7, 1, f"p{k}") for k in range(6)], 5)
    bad = _recalibrate(client, epochs="3")
    assert bad.status_code == 400 and bad.json["error"]["code"] == "bad_epochs"


def test_recalibration_refits_the_threshold_and_passes_the_gate(client, app, monkeypatch):
    settings = app.config["SCANQ_SETTINGS"]
    object.__setattr__(settings, "recalibrate_min", 20)  # this app's own settings
    rng = np.random.default_rng(0)
    truth = [1] * 16 + [0] * 16
    # This site's scores sit lower than the card's: the shipped threshold misses cases.
    probs = [float(np.clip(rng.normal(0.45 if t else 0.2, 0.08), 0.01, 0.99)) for t in truth]
    ids = _scored_job(client, app, probs)
    _review(client, ids, truth)
    resp = _recalibrate(client)
    assert resp.status_code == 202, resp.json
    assert resp.json["dataset"]["n"] == 32
    job_id = resp.json["id"]
    with session_scope(settings.database_url) as s:
        parent = s.scalar(
            select(ModelVersion).where(
                ModelVersion.active.is_(True), ModelVersion.modality == "xray"
            )
        )
        parent_id, parent_thr = parent.id, parent.threshold
        job = claim_training_job(s, job_id)
        options = dict(job.options)
    from worker.recalibration import run_recalibration

    assert run_recalibration(settings, job_id, "xray", options) == "succeeded"
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        assert job.status == "succeeded"
        new = s.get(ModelVersion, job.model_version_id)
        assert new.threshold < parent_thr and new.threshold != parent_thr
        assert new.backbone == parent.backbone and new.training_job_id == job_id
        decision = new.metrics["recalibration"]
        assert decision["parent"] == parent_id and decision["reason"]
        assert new.active == decision["promoted"]
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "gate"))
        assert event.detail["reason"] == decision["reason"]
        folder = settings.version_dir(new.path)
    parent_folder = settings.version_dir("builtin/xray")
    assert (folder / "model.keras").stat().st_size == (parent_folder / "model.keras").stat().st_size
    card = json.loads((folder / "card.json").read_text())
    assert (
        card["recalibration"]["parent"] == parent_id and card["config"]["recipe"] == "recalibrate"
    )
    assert card["validation"]["n"] + card["test"]["n"] == 32
    assert "recalibrated from" in (folder / "MODEL_CARD.md").read_text()
    assert (folder / "drift_reference.json").exists() and (folder / "roc.png").exists()
    # Compared on the held-back half: the same ranking (AUC), the lower threshold finds
    # at least as many of its cases.
    report = decision["report"]
    assert report["challenger"]["auc"] == report["champion"]["auc"]
    assert report["challenger"]["sensitivity"] >= report["champion"]["sensitivity"]
    assert report["challenger"]["n"] == card["test"]["n"]
    assert ("better" in decision["reason"]) == decision["promoted"]
