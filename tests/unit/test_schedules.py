"""Schedules through the API on a real SQLite database (no Redis listens: the rows are
kept and the reconciler syncs beat later), the firing claim, and the promotion gate."""

from datetime import timedelta

import pytest

from db.models import Schedule, utcnow
from db.schedules import claim_firing
from db.session import session_scope
from models.gate import decide


def test_schedule_crud_validation_and_pause(client, app, tmp_path):
    ok = client.post("/api/v1/schedules", json={"modality": "ct", "cron": "0 3 * * 1",
                                                "backbone": "smallcnn", "epochs": 2})  # fmt: skip
    assert ok.status_code == 201, ok.json
    sid = ok.json["id"]
    assert ok.json["enabled"] and ok.json["config"]["epochs"] == 2
    for body, code in [
        ({"modality": "ct"}, "bad_schedule"),  # neither cron nor interval
        ({"modality": "ct", "cron": "0 3 * * 1", "interval_seconds": 60}, "bad_schedule"),
        ({"modality": "ct", "cron": "0 25 * * *"}, "bad_schedule"),
        ({"modality": "ct", "cron": "every day"}, "bad_schedule"),
        ({"modality": "pet", "interval_seconds": 60}, "bad_modality"),
        ({"modality": "ct", "interval_seconds": 60, "margin": 2}, "bad_margin"),
        ({"modality": "ct", "interval_seconds": 60, "min_new_labels": -1}, "bad_min_new_labels"),
        ({"modality": "ct", "interval_seconds": 60, "base_data_path": "/etc"},
         "bad_base_data_path"),
    ]:  # fmt: skip
        resp = client.post("/api/v1/schedules", json=body)
        assert resp.status_code == 400 and resp.json["error"]["code"] == code, (body, resp.json)

    edited = client.patch(f"/api/v1/schedules/{sid}", json={"enabled": False, "margin": 0.02})
    assert edited.status_code == 200
    assert (edited.json["enabled"], edited.json["margin"]) == (False, 0.02)
    assert edited.json["cron"] == "0 3 * * 1" and edited.json["config"]["backbone"] == "smallcnn"
    page = client.get(f"/schedules/{sid}").get_data(as_text=True)
    assert "paused" in page and "Resume" in page
    resumed = client.post(f"/schedules/{sid}", data={"enabled": "true"})
    assert resumed.status_code == 303
    assert client.get(f"/api/v1/schedules/{sid}").json["enabled"] is True
    assert client.get(f"/api/v1/schedules/{sid}/runs").json["items"] == []
    # the shipped recipes' probe settings are kept, and survive an edit of another field
    probe = {"modality": "ct", "interval_seconds": 86400, "recipe": "probe", "equalize": True,
             "input_size": 352, "probe_pool": "avg_std", "probe_scales": "288",
             "probe_imagenet_view": 224}  # fmt: skip
    made = client.post("/api/v1/schedules", json=probe)
    assert made.status_code == 201, made.json
    again = client.patch(f"/api/v1/schedules/{made.json['id']}", json={"margin": 0.01}).json
    for config in (made.json["config"], again["config"]):
        assert (config["probe_pool"], config["probe_scales"]) == ("avg_std", [288])
        assert config["probe_imagenet_view"] == 224 and config["input_size"] == 352
    bad = client.post("/api/v1/schedules", json={**probe, "probe_scales": "352"})
    assert bad.json["error"]["code"] == "bad_probe_scales"
    assert client.delete(f"/api/v1/schedules/{sid}").status_code == 204
    assert client.get(f"/api/v1/schedules/{sid}").status_code == 404
    assert client.patch(f"/api/v1/schedules/{sid}", json={}).status_code == 404


def test_a_slot_is_claimed_once(app):
    url = app.config["SCANQ_SETTINGS"].database_url
    with session_scope(url) as s:
        row = Schedule(name="x", modality="ct", interval_seconds=60, config={},
                       min_new_labels=0, margin=0.0, enabled=True)  # fmt: skip
        s.add(row)
        s.flush()
        sid = row.id
    with session_scope(url) as s:
        assert claim_firing(s, sid, 30)
        assert not claim_firing(s, sid, 30)  # the same slot, fired again
        s.execute(Schedule.__table__.update().values(last_fired_at=utcnow() - timedelta(60)))
        assert claim_firing(s, sid, 30)


@pytest.mark.parametrize(
    ("champion", "challenger", "promote", "why"),
    [
        (None, {"auc": 0.7, "sensitivity": 0.8}, True, "no active model"),
        ({"auc": 0.80, "sensitivity": 0.9}, {"auc": 0.86, "sensitivity": 0.9}, True, "better"),
        ({"auc": 0.80, "sensitivity": 0.9}, {"auc": 0.82, "sensitivity": 0.95}, False, "margin"),
        ({"auc": 0.80, "sensitivity": 0.9}, {"auc": 0.95, "sensitivity": 0.85}, False,
         "sensitivity would drop"),
        ({"auc": 0.80, "sensitivity": 0.9}, {"auc": None, "sensitivity": 0.9}, False,
         "undefined"),
    ],
)  # fmt: skip
def test_gate_promotes_only_a_better_challenger(champion, challenger, promote, why):
    decision = decide(champion, challenger, margin=0.05)
    assert decision.promote is promote and why in decision.reason
