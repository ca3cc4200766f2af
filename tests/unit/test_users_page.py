"""The admins' Users page: users and tokens without token values, a token made and
shown once, one revoked with a button; an ordinary user gets 403."""

from __future__ import annotations

import re

from db.accounts import create_token, ensure_user
from db.models import ApiToken, AuditEvent
from db.session import session_scope


def _db(app) -> str:
    return app.config["SCANQ_SETTINGS"].database_url


def test_an_admin_lists_makes_and_revokes_tokens(client, app):
    page = client.get("/users")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="user-tester"' in html and "Research use only." in html
    assert app.config["TEST_TOKEN"] not in html  # values are never shown again

    made = client.post("/users/tokens", data={"user": "erin", "role": "user", "label": "lab PC"})
    assert made.status_code == 201
    value = re.search(r'id="new-token-value">([^<]+)<', made.get_data(as_text=True)).group(1)
    assert value.startswith("sq_")
    erin = app.test_client()
    erin.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {value}"
    assert erin.get("/api/v1/jobs").status_code == 200
    assert erin.get("/users").status_code == 403  # not an admin

    with session_scope(_db(app)) as s:
        token_id = s.query(ApiToken.id).filter(ApiToken.label == "lab PC").scalar()
    revoked = client.post(f"/users/tokens/{token_id}/revoke")
    assert revoked.status_code == 303 and revoked.headers["Location"].endswith(
        f"/users?revoked={token_id}"
    )
    assert erin.get("/api/v1/jobs").status_code == 401
    listed = client.get(f"/users?revoked={token_id}").get_data(as_text=True)
    row = re.search(rf'<tr id="token-{token_id}">.*?</tr>', listed, re.S).group(0)
    assert "revoked" in row and "Revoke</button>" not in row
    with session_scope(_db(app)) as s:
        actions = [(e.user, e.action) for e in s.query(AuditEvent).order_by(AuditEvent.id)]
    assert ("tester", "create_token") in actions and ("tester", "revoke_token") in actions


def test_bad_requests_on_the_users_page(client, app):
    bad_role = client.post("/users/tokens", data={"user": "frank", "role": "root"})
    assert bad_role.status_code == 400 and "role must be one of" in bad_role.get_data(True)
    bad_name = client.post("/users/tokens", data={"user": "no spaces", "role": "user"})
    assert bad_name.status_code == 400 and "user names are" in bad_name.get_data(True)
    assert client.post("/users/tokens/999999/revoke").status_code == 404

    # A token for an existing admin, with the role left as it is, keeps them an admin.
    kept = client.post("/users/tokens", data={"user": "tester", "role": "", "label": "2nd"})
    assert kept.status_code == 201
    assert client.get("/users").status_code == 200  # still an admin

    with session_scope(_db(app)) as s:
        plain = create_token(s, ensure_user(s, "gina"))
    gina = app.test_client()
    gina.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {plain}"
    assert gina.post("/users/tokens", data={"user": "gina", "role": "admin"}).status_code == 403
    assert gina.post("/users/tokens/1/revoke").status_code == 403
