"""A database whose schema is not this code's newest revision is named as such, by the
health check and by the API's answer, instead of reading as a passing outage."""

from sqlalchemy import text

from db.migrate import downgrade, schema_problem
from db.session import get_engine


def _health(app) -> dict:
    # Redis is unreachable in the `app` fixture, so the whole check is 503 anyway.
    return app.test_client().get("/healthz").json["checks"]


def test_a_migrated_database_is_healthy(app):
    url = app.config["SCANQ_SETTINGS"].database_url
    assert schema_problem(url) is None
    assert _health(app)["database"] == "ok"


def test_a_schema_behind_the_code_is_named_with_the_command_that_fixes_it(app, client):
    url = app.config["SCANQ_SETTINGS"].database_url
    downgrade(url, "0007")  # before api_token.last_used_at, which every API call reads

    assert "at 0007" in _health(app)["database"]
    resp = client.get("/api/v1/jobs")
    assert resp.status_code == 503
    assert resp.json["error"]["code"] == "database_schema"
    assert "scanq migrate" in resp.json["error"]["message"]


def test_a_database_never_migrated_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("SCANQ_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    from scanq.settings import get_settings
    from web.app import create_app

    get_settings.cache_clear()
    try:
        app = create_app(get_settings())
        resp = app.test_client().get("/api/v1/jobs", headers={"Authorization": "Bearer x"})
        assert resp.status_code == 503
        assert resp.json["error"]["code"] == "database_schema"
        assert "no ScanQ schema" in resp.json["error"]["message"]
        assert "no ScanQ schema" in _health(app)["database"]
    finally:
        get_settings.cache_clear()


def test_a_schema_newer_than_the_code_asks_for_an_upgrade_of_scanq(app):
    url = app.config["SCANQ_SETTINGS"].database_url
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))

    assert "newer than this ScanQ" in _health(app)["database"]
