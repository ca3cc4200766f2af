"""Who may see what, through the real stack: two ordinary users and an admin with
tokens from `scanq token create`. Every resource of one user's job is a 404 for the
other (API and pages alike); no token is a 401, a bad one too; only the admin manages
models and schedules; a cookie session must show its CSRF token to change anything;
and the audit trail says who did what."""

from __future__ import annotations

import re
import time

import requests
from sqlalchemy import select

from db.models import AuditEvent
from db.session import session_scope
from tests.conftest import sample_images


def _db_url(stack) -> str:
    return f"sqlite:///{stack.data_dir / 'scanq.sqlite3'}"


def test_users_see_only_their_own_and_admins_manage(stack, shared_data):
    alice = stack.session(stack.make_user("alice"))
    bob = stack.session(stack.make_user("bob"))
    anonymous = requests.Session()
    url = stack.url

    files = [
        ("files", (p.name, p.read_bytes())) for p in sample_images(shared_data, "ct", "covid", 3)
    ]
    job_id = alice.post(f"{url}/api/v1/jobs", files=files, data={"modality": "ct"}).json()["id"]
    stack.wait_job(job_id)
    items = alice.get(f"{url}/api/v1/jobs/{job_id}/results").json()["items"]
    scan = items[0]["scan_id"]
    assert all(i["status"] == "scored" for i in items)
    assert alice.get(f"{url}/api/v1/results/{scan}").status_code == 200

    # Every resource of alice's job, as bob: 404, exactly as for an id that never existed.
    resources = [
        f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/results",
        f"/api/v1/jobs/{job_id}/results.csv", f"/api/v1/jobs/{job_id}/series",
        f"/api/v1/results/{scan}", f"/api/v1/results/{scan}/heatmap.png",
        f"/jobs/{job_id}", f"/results/{scan}", f"/scans/{scan}/image.png",
        f"/scans/{scan}/thumbnail.png",
    ]  # fmt: skip
    for path in resources:
        assert bob.get(url + path).status_code == 404, path
        assert alice.get(url + path).status_code in (200, 202), path
    assert bob.post(f"{url}/api/v1/jobs/{job_id}/cancel").status_code == 404
    review = bob.post(f"{url}/api/v1/results/{scan}/review", json={"label": "covid"})
    assert review.status_code == 404
    assert job_id not in {j["id"] for j in bob.get(f"{url}/api/v1/jobs").json()["items"]}
    assert job_id in {j["id"] for j in alice.get(f"{url}/api/v1/jobs").json()["items"]}
    assert job_id not in bob.get(f"{url}/jobs").text
    assert job_id in stack.http.get(f"{url}/api/v1/jobs/{job_id}").json()["id"]  # admin

    # No token, or a wrong one: 401 for the API, the login page for pages.
    for client, headers in ((anonymous, {}), (anonymous, {"Authorization": "Bearer sq_nope"})):
        resp = client.get(f"{url}/api/v1/jobs", headers=headers)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # An upload without a token gets its 401 (the server reads the body first: answering
    # mid-upload would reset the connection), and the connection stays usable.
    posted = anonymous.post(f"{url}/api/v1/jobs", files=files, data={"modality": "ct"})
    assert posted.status_code == 401 and posted.json()["error"]["code"] == "unauthorized"
    page = anonymous.get(f"{url}/jobs/{job_id}", allow_redirects=False)
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    assert anonymous.get(f"{url}/healthz").status_code == 200

    # Models and schedules are the admin's.
    models = alice.get(f"{url}/api/v1/models").json()["items"]
    assert models  # everyone may read the registry
    for resp in (
        alice.post(f"{url}/api/v1/models/{models[0]['id']}/activate"),
        alice.delete(f"{url}/api/v1/models/{models[0]['id']}"),
        alice.post(f"{url}/api/v1/schedules", json={"modality": "ct", "interval_seconds": 60}),
        alice.get(f"{url}/api/v1/schedules"),
        alice.get(f"{url}/api/v1/labels?modality=ct"),
        alice.post(f"{url}/api/v1/training-jobs", data={"modality": "ct", "data_path": "/x"}),
    ):
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    assert alice.get(f"{url}/schedules").status_code == 403
    made = stack.http.post(f"{url}/api/v1/schedules", json={"modality": "ct", "cron": "0 3 * * 1"})
    assert made.status_code == 201
    stack.http.delete(f"{url}/api/v1/schedules/{made.json()['id']}")

    # A browser session: it logs in, and without its CSRF token it changes nothing.
    browser = requests.Session()
    login = browser.get(f"{url}/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    wrong = browser.post(f"{url}/login", data={"name": "alice", "password": "guess",
                                                "csrf_token": token})  # fmt: skip
    assert wrong.status_code == 401
    ok = browser.post(f"{url}/login", data={"name": "alice", "password": stack.PASSWORD,
                                             "csrf_token": token})  # fmt: skip
    assert ok.status_code == 200 and "alice" in ok.text
    cookie = next(c for c in browser.cookies if c.name == "session")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert browser.get(f"{url}/api/v1/jobs/{job_id}").status_code == 200  # the cookie works
    forged = browser.post(f"{url}/api/v1/results/{scan}/review", json={"label": "covid"})
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "csrf_failed"
    page_token = re.search(r'name="csrf-token" content="([^"]+)"', ok.text).group(1)
    real = browser.post(f"{url}/api/v1/results/{scan}/review", json={"label": "covid"},
                        headers={"X-CSRFToken": page_token})  # fmt: skip
    assert real.status_code == 201 and real.json()["reviewer"] == "alice"
    relabel = alice.post(f"{url}/api/v1/results/{scan}/review", json={"label": "non_covid"})
    assert relabel.status_code == 201

    # The audit trail: who submitted, who labelled and relabelled, who made tokens.
    with session_scope(_db_url(stack)) as s:
        events = [(e.user, e.action, e.target, e.detail) for e in s.scalars(select(AuditEvent))]
    assert ("alice", "submit_job", f"job:{job_id}") in [e[:3] for e in events]
    labels = [e for e in events if e[2] == f"scan:{scan}"]
    assert [(e[0], e[1]) for e in labels] == [("alice", "review"), ("alice", "change_label")]
    assert labels[1][3]["from"] == "covid" and labels[1][3]["to"] == "non_covid"
    assert {("create_token", "user:alice"), ("create_token", "user:bob")} <= {
        (e[1], e[2]) for e in events
    }
    trail = stack.http.get(f"{url}/api/v1/audit?limit=1000").json()["items"]
    assert len(trail) == len(events) and trail[0]["action"] == "change_label"
    assert alice.get(f"{url}/api/v1/audit").status_code == 403

    # A revoked token stops working at once.
    assert bob.get(f"{url}/api/v1/jobs").status_code == 200
    revoked = stack.scanq("token", "revoke", "--user", "bob")
    assert revoked.returncode == 0, revoked.stderr
    assert bob.get(f"{url}/api/v1/jobs").status_code == 401


def test_tokens_are_listed_with_their_last_use_and_revoked_one_by_one(stack):
    """What an admin needs to retire stale tokens: `scanq token list` shows when each
    was last used (recorded after the response, once an hour at most), and `revoke
    --id` retires one token while the user's others keep working."""
    used = stack.session(stack.make_user("carol"))
    spare_token = stack.scanq("token", "create", "--user", "carol", "--label", "spare")
    spare = stack.session(spare_token.stdout.strip())
    assert used.get(f"{stack.url}/api/v1/jobs").status_code == 200

    def listed_rows() -> list[list[str]]:
        listed = stack.scanq("token", "list", "--user", "carol")
        assert listed.returncode == 0, listed.stderr
        return [line.split() for line in listed.stdout.splitlines()]

    deadline = time.monotonic() + 10  # the use is written once the response has gone
    while (rows := listed_rows())[1][-2] == "never":
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    header, first, second = rows
    assert header[:3] == ["id", "user", "label"]
    assert first[1] == "carol" and first[-1] == "active" and first[-2] != "never"
    assert second[2] == "spare" and second[-2:] == ["never", "active"]

    revoked = stack.scanq("token", "revoke", "--id", first[0])
    assert revoked.returncode == 0, revoked.stderr
    assert used.get(f"{stack.url}/api/v1/jobs").status_code == 401
    assert spare.get(f"{stack.url}/api/v1/jobs").status_code == 200
    assert [row[-1] for row in listed_rows()[1:]] == ["revoked", "active"]

    users = {
        line.split()[0]: line.split() for line in stack.scanq("user", "list").stdout.splitlines()
    }
    assert users["carol"][1:4] == ["user", "yes", "1"]  # role, can log in, live tokens

    both = stack.scanq("token", "revoke", "--id", first[0], "--user", "carol")
    assert both.returncode != 0 and "either --user or --id" in both.stderr
    missing = stack.scanq("token", "revoke", "--id", "999999")
    assert missing.returncode != 0 and "no token 999999" in missing.stderr
