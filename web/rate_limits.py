"""Rate limits (Flask-Limiter), kept in the Redis the stack already runs, so every
gunicorn worker and every web replica counts the same attempts. Where there is no Redis
to reach (unit tests, a web process started before its Redis) the counts are kept in
this process's memory instead, which still limits, per process.

The login form is limited on failed attempts only, per client address and, separately,
per account name: one address cannot try many passwords, nor many addresses one
account's (settings.login_rate_limit)."""

from __future__ import annotations

import time

from flask import Flask, current_app, jsonify, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits import parse_many

from scanq.settings import Settings


def init_rate_limits(app: Flask, settings: Settings) -> Limiter:
    """This app's limiter (one per app: its fallback state is its own), and the limits
    of the login view (`auth.login`, registered before this is called)."""
    try:
        parse_many(settings.login_rate_limit)
    except ValueError as exc:
        raise RuntimeError(
            f"SCANQ_LOGIN_RATE_LIMIT={settings.login_rate_limit!r} is not a rate limit "
            "such as '5 per minute;20 per hour'"
        ) from exc
    try:
        storage = settings.resolved_redis_url()
    except RuntimeError:  # no Redis configured or published yet
        storage = "memory://"
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage,
        # A Redis that does not answer must not hold a login up: fall back to memory.
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1},
        in_memory_fallback_enabled=True,
        headers_enabled=True,  # X-RateLimit-* on limited routes, Retry-After on a 429
        key_prefix="scanq-limits",
    )
    app.extensions[EXTENSION] = limiter
    login = app.view_functions["auth.login"]
    for key_func, scope in ((get_remote_address, "login-address"), (_account_name, "login-name")):
        login = limiter.limit(settings.login_rate_limit, key_func=key_func, scope=scope,
                              methods=["POST"], deduct_when=_failed,
                              error_message=_message)(login)  # fmt: skip
    app.view_functions["auth.login"] = login
    app.register_error_handler(RateLimitExceeded, _too_many_requests)
    return limiter


EXTENSION = "scanq_limiter"


def _failed(response) -> bool:
    """Only a refused login counts against the limit."""
    return response.status_code == 401


def _account_name() -> str:
    return "name:" + (request.form.get("name") or "").strip().lower()


def _message() -> str:
    return "too many failed logins; wait a little and try again"


def _retry_after_s() -> int:
    current = current_app.extensions[EXTENSION].current_limit
    return max(1, int(current.reset_at - time.time())) if current else 60


def _too_many_requests(exc: RateLimitExceeded):
    """429 with Retry-After (added by the limiter): the login page with the reason for
    a browser, {"error": ...} for a client that asks for JSON."""
    wait = _retry_after_s()
    message = f"{exc.description} (in {wait} s)"
    headers = {"Retry-After": str(wait)}
    wants_json = request.path.startswith("/api/") or (
        request.accept_mimetypes.best == "application/json"
    )
    if wants_json:
        body = jsonify(error={"code": "too_many_requests", "message": message,
                              "retry_after": wait})  # fmt: skip
        return body, 429, headers
    target = request.values.get("next") or "/"
    return render_template("login.html", error=message, next=target), 429, headers
