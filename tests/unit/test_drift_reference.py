"""worker.drift: where a version without a drift reference gets one, for the cases that
need no TensorFlow (a recalibrated version takes its parent's under its own
temperature; a version whose data is unknown gets a file saying why, which the
monitoring report shows instead of asking again)."""

from __future__ import annotations

import shutil

import numpy as np
from sqlalchemy import select

from db.models import Job, ModelVersion
from db.session import session_scope
from models import drift


def _version(settings, session, options: dict, temperature: float) -> int:
    job = Job(kind="training", modality="xray", status="succeeded", options=options)
    session.add(job)
    session.flush()
    folder = settings.data_dir / "model_versions" / job.id
    folder.mkdir(parents=True)
    shutil.copyfile(settings.model_dir / "xray" / "card.json", folder / "card.json")
    version = ModelVersion(modality="xray", backbone="efficientnet_lite0", input_size=256,
                           path=f"model_versions/{job.id}", threshold=0.5,
                           temperature=temperature, training_job_id=job.id)  # fmt: skip
    session.add(version)
    session.flush()
    return version.id


def test_recalibrated_versions_take_the_parents_reference_and_unknown_data_says_why(app, client):
    from worker.drift import drift_reference

    settings = app.config["SCANQ_SETTINGS"]
    with session_scope(settings.database_url) as s:
        parent = s.scalar(select(ModelVersion).where(ModelVersion.path == "builtin/xray"))
        recal = _version(
            settings, s, {"recalibrate": {"parent": parent.id}}, parent.temperature * 2
        )
        orphan = _version(settings, s, {}, 1.0)
        parent_t = parent.temperature
    assert drift_reference(recal) == "made"
    made = drift.load_reference(settings.data_dir / "model_versions" / _job(settings, recal))
    shipped = drift.load_reference(settings.model_dir / "xray")
    assert made["temperature"] == parent_t * 2 and len(made["scores"]) == shipped["n"]
    # A higher temperature pulls every probability towards 0.5, keeping their order.
    a, b = np.asarray(shipped["scores"]), np.asarray(made["scores"])
    assert np.all(np.abs(b - 0.5) <= np.abs(a - 0.5) + 1e-6)
    assert np.array_equal(np.argsort(a, kind="stable"), np.argsort(b, kind="stable"))
    assert made["ood_scores"] == shipped["ood_scores"]  # same weights, same features

    assert drift_reference(orphan) == "error"
    body = client.get(f"/api/v1/monitoring?modality=xray&model_version={orphan}").json
    assert body["drift"]["reference"]["status"].startswith("unavailable: no data to score")
    assert drift_reference(recal) == "exists"


def _job(settings, version_id: int) -> str:
    with session_scope(settings.database_url) as s:
        return s.get(ModelVersion, version_id).training_job_id
