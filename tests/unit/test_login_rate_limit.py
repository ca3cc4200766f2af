"""The login form's failed attempts are limited (Flask-Limiter): per client address and
per account name, in Redis where there is one, with a clear 429 and Retry-After."""

from __future__ import annotations

import re

import pytest

from db.accounts import ensure_user
from db.session import session_scope

PASSWORD = "pw-for-tests"
LIMIT = 5  # the default: 5 failed logins per minute


def _login_form(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _attempt(client, token: str, name: str, password: str, **headers):
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token},
                       headers=headers)  # fmt: skip


@pytest.fixture()
def users(app):
    with session_scope(app.config["SCANQ_SETTINGS"].database_url) as s:
        for name in ("alice", "bob"):
            ensure_user(s, name, "user", password=PASSWORD)


def test_failed_logins_beyond_the_limit_get_a_429_with_retry_after(app, users):
    browser = app.test_client()
    token = _login_form(browser)
    for _ in range(LIMIT):
        assert _attempt(browser, token, "alice", "guess").status_code == 401
    refused = _attempt(browser, token, "alice", PASSWORD)  # even the right password now
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    page = refused.get_data(as_text=True)
    assert "too many failed logins" in page and 'id="login-form"' in page

    api = _attempt(browser, token, "alice", "guess", Accept="application/json")
    assert api.status_code == 429 and api.json["error"]["code"] == "too_many_requests"
    assert api.json["error"]["retry_after"] == int(api.headers["Retry-After"])


def test_one_account_is_limited_across_addresses_and_successes_do_not_count(app, users):
    for i in range(LIMIT):  # each guess from another address
        client = app.test_client()
        form = {"name": "alice", "password": "guess", "csrf_token": _login_form(client)}
        resp = client.post("/login", data=form, environ_base={"REMOTE_ADDR": f"10.0.0.{i + 1}"})
        assert resp.status_code == 401
    fresh = app.test_client()
    token = _login_form(fresh)
    last = fresh.post("/login", data={"name": "Alice ", "password": PASSWORD, "csrf_token": token},
                      environ_base={"REMOTE_ADDR": "10.0.0.99"})  # fmt: skip
    assert last.status_code == 429  # the name, not the address, ran out

    bob = app.test_client()
    for _ in range(LIMIT + 3):  # logging in (and so not failing) is never limited
        assert _attempt(bob, _login_form(bob), "bob", PASSWORD).status_code == 303


def test_the_counts_live_in_redis(tmp_path, monkeypatch, redis_url):
    """With a Redis to use, every web process counts the same attempts there."""
    import redis

    from cli.stack import prepare
    from scanq.settings import get_settings
    from web.app import create_app

    own_db = f"{redis_url.rsplit('/', 1)[0]}/0"  # Stacks use databases 1-15
    monkeypatch.setenv("SCANQ_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", own_db)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        prepare(settings)
        with session_scope(settings.database_url) as s:
            ensure_user(s, "carol", "user", password=PASSWORD)
        store = redis.Redis.from_url(own_db)
        for key in store.scan_iter("scanq-limits*"):
            store.delete(key)
        app = create_app(settings)
        client = app.test_client()
        token = _login_form(client)
        assert _attempt(client, token, "carol", "guess").status_code == 401
        keys = [k.decode() for k in store.scan_iter("*scanq-limits*")]
        assert any("name:carol" in k for k in keys), keys
        for _ in range(LIMIT - 1):
            _attempt(client, token, "carol", "guess")
        # A second app (as another gunicorn worker would be) is refused too.
        other = create_app(settings).test_client()
        assert _attempt(other, _login_form(other), "carol", PASSWORD).status_code == 429
    finally:
        get_settings.cache_clear()


def test_behind_a_trusted_proxy_each_client_address_has_its_own_limit(app, users):
    """SCANQ_PROXY_HOPS=1: the limit counts the address the proxy forwarded, not the
    proxy's own one, so one client's failures do not lock out every user behind it."""
    from dataclasses import replace

    from web.app import create_app

    proxied = create_app(replace(app.config["SCANQ_SETTINGS"], proxy_hops=1))
    proxy = {"REMOTE_ADDR": "192.168.0.1"}

    def attempt(client, name, password, forwarded_for):
        form = {"name": name, "password": password, "csrf_token": _login_form(client)}
        return client.post("/login", data=form, environ_base=proxy,
                           headers={"X-Forwarded-For": forwarded_for})  # fmt: skip

    guesser, colleague = proxied.test_client(), proxied.test_client()
    for i in range(LIMIT):  # a different account each time: only the address runs out
        assert attempt(guesser, f"nobody{i}", "guess", "10.1.0.7").status_code == 401
    assert attempt(guesser, "alice", PASSWORD, "10.1.0.7").status_code == 429
    assert attempt(colleague, "bob", PASSWORD, "10.1.0.8").status_code == 303

    unproxied = app.test_client()  # without the setting the header is not believed
    for i in range(LIMIT):
        form = {"name": f"x{i}", "password": "guess", "csrf_token": _login_form(unproxied)}
        unproxied.post("/login", data=form, environ_base=proxy,
                       headers={"X-Forwarded-For": f"10.2.0.{i}"})  # fmt: skip
    other = app.test_client()
    form = {"name": "bob", "password": PASSWORD, "csrf_token": _login_form(other)}
    assert other.post("/login", data=form, environ_base=proxy).status_code == 429
