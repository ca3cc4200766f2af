"""The Flask app factory."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from scanq import DISCLAIMER
from scanq.settings import DEFAULT_SECRET, Settings, get_settings

FORM_FIELDS = 64  # room for the non-file fields of a form
DATABASE_RETRY_AFTER_S = 5


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    if settings.environment == "production" and settings.secret_key == DEFAULT_SECRET:
        raise RuntimeError(
            "SCANQ_ENV=production needs SECRET_KEY set to a long random string; "
            "the development default signs sessions anyone could forge"
        )
    if settings.proxy_hops < 0:
        raise RuntimeError(f"SCANQ_PROXY_HOPS must be 0 or more, got {settings.proxy_hops}")
    app = Flask(__name__)
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client's own address, scheme and host, as the trusted proxies saw them.
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.config.update(
        SCANQ_SETTINGS=settings,
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        # Large multipart bodies go to temporary files, not memory, per part.
        MAX_FORM_MEMORY_SIZE=16 * 1024 * 1024,
        # Werkzeug refuses forms of more than 1,000 parts by default: a bulk upload has
        # one part per file, plus a few fields.
        MAX_FORM_PARTS=settings.max_files_per_job + FORM_FIELDS,
        # Behind TLS in production: the session cookie never travels in clear.
        SESSION_COOKIE_SECURE=settings.environment == "production",
    )
    from web.extensions import celery_init_app

    celery_init_app(app)
    # api_* and pages_* add their routes to api.bp and pages.bp when imported.
    from web import api, api_results, api_schedules, pages, pages_accounts, pages_review  # noqa: F401
    from web.auth import init_auth

    init_auth(app)  # cookie flags, CSRF, and who is asking, before any route
    from web import monitoring  # noqa: F401 - #21: routes on api.bp and pages.bp, drift banner
    from web.metrics import init_metrics

    init_metrics(app)  # /metrics (#21)

    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    # DICOM in (issue #19): STOW-RS, the study worklist and pulls, peers and sources.
    from web import dicom_admin, dicomweb, studies

    app.register_blueprint(dicomweb.bp)
    app.register_blueprint(studies.api)
    app.register_blueprint(studies.pages)
    app.register_blueprint(dicom_admin.bp)
    # DICOM out (issue #19): a study's delivery state and resend.
    from web import deliveries_api

    app.register_blueprint(deliveries_api.bp)
    app.register_blueprint(deliveries_api.pages)
    app.jinja_env.globals["DISCLAIMER"] = DISCLAIMER

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        """JSON errors for API clients (routing errors included); pages keep Flask's."""
        if isinstance(exc, RequestEntityTooLarge):
            limit = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
            files = app.config["MAX_FORM_PARTS"] - FORM_FIELDS
            code = "upload_too_large"
            message = f"an upload is limited to {limit} MB and {files:,} files; split it"
        else:
            code = (exc.name or "error").lower().replace(" ", "_")
            message = exc.description
        if request.path.startswith("/api/"):
            return jsonify(error={"code": code, "message": message}), exc.code
        return exc

    @app.errorhandler(OperationalError)
    def _database_unavailable(exc: OperationalError):
        """The server restarting, unreachable or (SQLite) locked is a state to wait out,
        not a fault of the request: 503 with Retry-After, so clients try again. A schema
        that `scanq migrate` has not brought up to date is named as such, for the
        operator, instead of reading as an outage."""
        from db.migrate import schema_problem

        try:
            problem = schema_problem(settings.database_url)
        except OperationalError:
            problem = None
        if problem:
            logging.getLogger(__name__).error("%s (%s)", problem, exc.orig)
            code, message = "database_schema", problem
        else:
            logging.getLogger(__name__).warning("database unavailable: %s", exc.orig)
            code = "database_unavailable"
            message = "the database is unavailable for the moment; try again shortly"
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
        if request.path.startswith("/api/"):
            return jsonify(error={"code": code, "message": message}), 503, headers
        return message, 503, {**headers, "Content-Type": "text/plain; charset=utf-8"}

    @app.get("/healthz")
    def healthz():
        checks = {"web": "ok"}
        status = 200
        try:
            from db.migrate import schema_problem

            checks["database"] = schema_problem(settings.database_url) or "ok"
            if checks["database"] != "ok":
                status = 503
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
            status = 503
        try:
            import redis

            client = redis.Redis.from_url(settings.resolved_redis_url(), socket_timeout=2)
            client.ping()
            client.close()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
            status = 503
        return jsonify(status="ok" if status == 200 else "degraded", checks=checks), status

    _warm_up(settings)
    logging.getLogger(__name__).info("ScanQ web ready (data dir %s)", settings.data_dir)
    return app


def _warm_up(settings: Settings) -> None:
    """Do once, while the process starts (each gunicorn worker makes its app), what the
    first /healthz would otherwise do inside a request: import Alembic and redis-py and
    read the migration scripts (0.4 s on an idle machine, seconds on a loaded one, which
    is what a start-up probe with a short timeout sees). The database may not be up yet:
    /healthz reports that, not the factory."""
    import redis  # noqa: F401 - imported for the first request's sake

    from db.migrate import schema_problem

    try:
        schema_problem(settings.database_url)
    except Exception as exc:  # an unreachable database is /healthz's to report
        logging.getLogger(__name__).info("warm-up: database not checked (%s)", exc)
