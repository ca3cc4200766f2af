"""The admins' Users page: every user and token (never a token's value), when each token
was last used, a button to revoke one, and a form that makes a token and shows it once.
The same functions serve `scanq user list` and `scanq token ...` (db.accounts)."""

from __future__ import annotations

from flask import abort, redirect, render_template, request, url_for

from db.accounts import AccountError, issue_token, revoke_token, token_rows, user_rows
from db.models import ROLES
from web.auth import current_user
from web.http import db_session
from web.pages import bp


def _users_page(error: str | None = None, status: int = 200, **shown):
    if not current_user().is_admin:
        abort(403)
    with db_session() as session:
        users, tokens = user_rows(session), token_rows(session)
    page = render_template("users.html", users=users, tokens=tokens, error=error,
                           roles=ROLES, form=request.form, **shown)  # fmt: skip
    return page, status


@bp.get("/users")
def users_page():
    revoked = request.args.get("revoked", type=int)
    return _users_page(revoked=revoked)


@bp.post("/users/tokens")
def token_create_form():
    """A token for a user (made if missing), shown once, here. The role is changed only
    when one is chosen: a token for an existing admin keeps them an admin."""
    if not current_user().is_admin:
        abort(403)
    name = request.form.get("user", "").strip()
    chosen = request.form.get("role", "")
    label = request.form.get("label", "").strip()
    try:  # an unknown role or name is an AccountError, before anything is written
        with db_session() as session:
            value = issue_token(session, name, chosen or None, label, by=current_user().name)
    except AccountError as exc:
        return _users_page(str(exc), 400)
    return _users_page(new_token=value, new_token_user=name, status=201)


@bp.post("/users/tokens/<int:token_id>/revoke")
def token_revoke_form(token_id: int):
    if not current_user().is_admin:
        abort(403)
    try:
        with db_session() as session:
            revoke_token(session, token_id, by=current_user().name)
    except AccountError:
        abort(404)
    return redirect(url_for("pages.users_page", revoked=token_id), 303)
