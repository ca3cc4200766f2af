"""Who is asking. Every request but the login page, static files and /healthz must come
from a user: API clients send `Authorization: Bearer <token>`, browsers log in and
carry a session cookie (HttpOnly, SameSite=Lax, Secure in production). A request that
rides on the cookie and changes something must carry the session's CSRF token (forms
have a hidden field, scripts an X-CSRFToken header); a bearer request has no cookie to
abuse and needs none. Requests are checked by Flask-WTF's CSRFProtect, called here only
for cookie-authenticated requests.

Uploads that are stored while they arrive (web.multipart) cannot have their whole body
parsed for the token first: their check waits until the view has read the form fields
sent before the files (`check_streamed_csrf`), still before any file is stored. A
response from such a view that skipped the check is turned into an error."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from flask import (
    Blueprint,
    Flask,
    after_this_request,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from db.accounts import audit, check_password, match_token, touch_token
from db.models import User
from db.session import session_scope
from web.http import db_session, settings
from web.rate_limits import init_rate_limits

log = logging.getLogger(__name__)


class _StreamingCSRFProtect(CSRFProtect):
    """Looks for the token in the fields a streamed view has read so far, when there
    are any, instead of in `request.form` (which would read the whole body first)."""

    def _get_csrf_token(self):
        fields = g.get("streamed_fields")
        return super()._get_csrf_token() if fields is None else _token_sent(fields)


def _token_sent(fields: Mapping[str, str]) -> str | None:
    """The CSRF token among these form fields, or else in a header."""
    token = fields.get(current_app.config["WTF_CSRF_FIELD_NAME"])
    headers = (request.headers.get(h) for h in current_app.config["WTF_CSRF_HEADERS"])
    return token or next((h for h in headers if h), None)


bp = Blueprint("auth", __name__)
csrf = _StreamingCSRFProtect()
PUBLIC = {"static", "auth.login", "healthz"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Views that store a multipart upload while it arrives; each calls check_streamed_csrf.
STREAMED_UPLOADS = {"pages.upload", "api.create_job"}


@dataclass(frozen=True)
class Principal:
    """The user of this request, detached from any database session."""

    id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def current_user() -> Principal:
    return g.user


def init_auth(app: Flask) -> None:
    app.config.update(
        WTF_CSRF_CHECK_DEFAULT=False,  # checked in _authenticate, for cookie requests only
        WTF_CSRF_TIME_LIMIT=None,  # valid for the session's life
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    csrf.init_app(app)
    app.before_request(_authenticate)
    app.after_request(_deferred_csrf_was_checked)
    app.register_blueprint(bp)
    init_rate_limits(app, app.config["SCANQ_SETTINGS"])  # the login form's guesses

    @app.errorhandler(CSRFError)
    def _csrf_failed(exc: CSRFError):
        message = f"CSRF check failed: {exc.description}; reload the page and try again"
        if request.path.startswith("/api/"):
            return jsonify(error={"code": "csrf_failed", "message": message}), 400
        return render_template("login.html", error=message, next=request.path), 400


def _principal(user: User | None) -> Principal | None:
    return Principal(user.id, user.name, user.role) if user else None


def _authenticate():
    g.user = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        with db_session() as s:
            match = match_token(s, header[7:].strip())
            g.user = _principal(match and match.user)
        if match is None:
            return _unauthorized("the token is not valid (revoked, or never issued)")
        if match.touch_due():
            _touch_after_response(match.token_id)
        return None
    if "user_id" in session:
        with db_session() as s:
            g.user = _principal(s.get(User, session["user_id"]))
    if g.user is None and request.endpoint not in PUBLIC:
        return _unauthorized("log in, or send Authorization: Bearer <token>")
    if request.method not in SAFE_METHODS:
        # The cookie is sent by the browser on its own: prove the page.
        if request.endpoint in STREAMED_UPLOADS:
            g.csrf_deferred = True  # the view checks once it has read the fields
        else:
            csrf.protect()
    return None


def _touch_after_response(token_id: int) -> None:
    """Record the token's use once the response has gone, best effort: the client never
    waits for the write, and a database that refuses it costs only the record."""

    url = settings().database_url  # the app context is gone when the response closes

    def touch() -> None:
        try:
            with session_scope(url) as s:
                touch_token(s, token_id)
        except Exception:
            logging.getLogger(__name__).warning(
                "token %s: use not recorded", token_id, exc_info=True
            )

    @after_this_request
    def _on_close(response):
        response.call_on_close(touch)
        return response


def csrf_token_pending(fields: Mapping[str, str]) -> bool:
    """Whether this request's deferred CSRF check still lacks a token: not among the
    fields read so far, nor in a header. The view then reads the whole upload (without
    storing it) to find the fields sent after the files."""
    return bool(g.get("csrf_deferred")) and _token_sent(fields) is None


def check_streamed_csrf(fields: Mapping[str, str]) -> None:
    """The deferred CSRF check of a cookie request to a streamed upload, on the fields
    read so far; call it before storing anything. A refused request's body is drained
    first, so that the browser shows the error rather than a reset connection."""
    if not g.get("csrf_deferred"):
        return
    g.streamed_fields = fields
    try:
        csrf.protect()
    except CSRFError:
        if request.content_length:
            _drain_body()
        raise
    g.csrf_deferred = False


def _deferred_csrf_was_checked(response):
    """A streamed upload view that answered success without its CSRF check is a bug
    that would let another site submit jobs as the user: refuse rather than pass."""
    if g.get("csrf_deferred") and response.status_code < 400:
        current_app.logger.error("%s answered without its CSRF check", request.endpoint)
        return jsonify(error={"code": "csrf_unchecked", "message": "CSRF check missing"}), 500
    return response


DRAIN_LIMIT = 64 * 1024 * 1024


def _drain_body() -> None:
    """Read an unauthenticated request's body before answering it. A server that answers
    and closes while a client is still uploading resets the connection, and the client
    sees "connection reset" instead of the 401. Bounded: beyond the limit the
    connection may close."""
    try:
        stream = request.stream
        left = DRAIN_LIMIT
        while left > 0 and (chunk := stream.read(min(1 << 20, left))):
            left -= len(chunk)
    except (OSError, HTTPException):  # over the upload limit, or the client went away
        pass


def _unauthorized(message: str):
    if request.content_length:
        _drain_body()
    if request.path.startswith(("/api/", "/dicomweb/")):
        body = jsonify(error={"code": "unauthorized", "message": message})
        return body, 401, {"WWW-Authenticate": 'Bearer realm="scanq"'}
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


@bp.route("/login", methods=["GET", "POST"])
def login():
    target = request.values.get("next") or "/"
    if not target.startswith("/") or target.startswith("//"):
        target = "/"  # never an open redirect
    if request.method == "GET":
        return render_template("login.html", error=None, next=target)
    name, password = request.form.get("name", ""), request.form.get("password", "")
    with db_session() as s:
        user = _principal(check_password(s, name, password))
        if user is not None:
            audit(s, user.name, "login", f"user:{user.name}")
    if user is None:
        return render_template("login.html", error="wrong name or password", next=target), 401
    session.clear()
    session["user_id"] = user.id
    return redirect(target, 303)


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("auth.login"), 303)
