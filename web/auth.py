"""Who is asking. Every request but the login page, static files and /healthz must come
from a user: API clients send `Authorization: Bearer <token>`, browsers log in and
carry a session cookie (HttpOnly, SameSite=Lax, Secure in production). A request that
rides on the cookie and changes something must carry the session's CSRF token (forms
have a hidden field, scripts an X-CSRFToken header); a bearer request has no cookie to
abuse and needs none. Requests are checked by Flask-WTF's CSRFProtect, called here only
for cookie-authenticated requests."""

from __future__ import annotations

from dataclasses import dataclass

from flask import (
    Blueprint,
    Flask,
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

from db.accounts import audit, check_password, user_for_token
from db.models import User
from web.services import db_session

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()
PUBLIC = {"static", "auth.login", "healthz"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


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
    app.register_blueprint(bp)

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
            g.user = _principal(user_for_token(s, header[7:].strip()))
        if g.user is None:
            return _unauthorized("the token is not valid (revoked, or never issued)")
        return None
    if "user_id" in session:
        with db_session() as s:
            g.user = _principal(s.get(User, session["user_id"]))
    if g.user is None and request.endpoint not in PUBLIC:
        return _unauthorized("log in, or send Authorization: Bearer <token>")
    if request.method not in SAFE_METHODS:
        csrf.protect()  # the cookie is sent by the browser on its own: prove the page
    return None


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
    if request.path.startswith("/api/"):
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
