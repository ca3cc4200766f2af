"""HTTP plumbing shared by the JSON API and the pages: the error a handler raises for
a refusal (the API answers it as a JSON error, the pages as a message), form and query
fields read with a 400 that says what is wrong, and the app's settings and database
session."""

from __future__ import annotations

from collections.abc import Mapping

from flask import current_app, jsonify

from db.session import session_scope
from scanq.settings import Settings


class ApiError(Exception):
    """A refusal with its HTTP status, a stable code and a message for people."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def api_error_response(exc: ApiError):
    """The JSON answer to an ApiError, {"error": {"code", "message"}} with its status: a
    blueprint's error handler (`bp.register_error_handler(ApiError, api_error_response)`)."""
    return jsonify(error={"code": exc.code, "message": exc.message}), exc.status


def bounded_number(values: Mapping[str, str], name: str, kind: type, default, lo: float, hi: float):
    """A number from form fields or query arguments, with a 400 that says what is
    wrong; `default` when the field is absent or empty."""
    raw = (values.get(name) or "").strip()
    if raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ApiError(400, f"bad_{name}", f"{name} must be {what}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"bad_{name}", f"{name} must be between {lo:g} and {hi:g}")
    return value


TRUE = {"1", "true", "yes", "on"}
FALSE = {"", "0", "false", "no", "off"}


def boolean_field(values: Mapping[str, str], name: str) -> bool:
    """A yes/no form field (absent is no), with a 400 for anything else."""
    raw = (values.get(name) or "").strip().lower()
    if raw not in TRUE | FALSE:
        raise ApiError(400, f"bad_{name}", f"{name} must be true or false")
    return raw in TRUE


def settings() -> Settings:
    return current_app.config["SCANQ_SETTINGS"]


def db_session():
    return session_scope(settings().database_url)
