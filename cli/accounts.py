"""`scanq token ...` and `scanq user ...`: accounts, made on the server against the
database (like `scanq migrate`), not through the API."""

from __future__ import annotations

import sys

import click

from db.accounts import (
    AccountError,
    audit,
    ensure_user,
    get_user,
    issue_token,
    revoke_token,
    revoke_user_tokens,
    token_rows,
    user_rows,
)
from db.session import session_scope
from scanq.settings import get_settings


@click.group()
def token() -> None:
    """API tokens (sent as Authorization: Bearer <token>)."""


@token.command("create")
@click.option("--user", "name", required=True, help="made if missing")
@click.option("--admin", is_flag=True, help="give the user the admin role")
@click.option("--label", default="", help="what the token is for")
def token_create(name: str, admin: bool, label: str) -> None:
    """Print a new token for a user, once; only its hash is stored."""
    with _session() as session:
        value = _checked(lambda: issue_token(session, name, "admin" if admin else None,
                                             label, by=None))  # fmt: skip
    click.echo(value)


@token.command("list")
@click.option("--user", "name", default=None, help="only this user's tokens")
def token_list(name: str | None) -> None:
    """Tokens (never their values): user, label, made, last used (to the hour), state."""
    with _session() as session:
        tokens = _checked(lambda: token_rows(session, name))
    rows = [
        (str(t.id), t.user, t.label or "-", _when(t.created_at), _when(t.last_used_at),
         "revoked" if t.revoked else "active")
        for t in tokens
    ]  # fmt: skip
    _table(("id", "user", "label", "created", "last used", "state"), rows)


@token.command("revoke")
@click.option("--user", "name", default=None, help="every token of this user")
@click.option("--id", "token_id", type=int, default=None, help="this token only (see list)")
def token_revoke(name: str | None, token_id: int | None) -> None:
    """Revoke one token (--id) or every token of a user (--user)."""
    if (name is None) == (token_id is None):
        raise click.UsageError("give either --user or --id")
    with _session() as session:
        if token_id is not None:
            owner = _checked(lambda: revoke_token(session, token_id, by=None))
            click.echo(f"revoked token {token_id} of {owner}", err=True)
            return
        n = _checked(lambda: revoke_user_tokens(session, name, by=None))
    click.echo(f"revoked {n} token(s) of {name}", err=True)


@click.group()
def user() -> None:
    """Users of the web pages."""


@user.command("password")
@click.argument("name")
@click.option("--admin", is_flag=True, help="give the user the admin role")
def user_password(name: str, admin: bool) -> None:
    """Set a user's login password (read from stdin, or asked); makes the user."""
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else None
    if password is None:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("a password needs at least 8 characters")
    with _session() as session:
        existing = get_user(session, name)
        role = "admin" if admin else (existing.role if existing else "user")
        found = _checked(lambda: ensure_user(session, name, role, password=password))
        found.role = role
        audit(session, None, "set_password", f"user:{name}", {"role": role})
    click.echo(f"password set for {name} ({role})", err=True)


@user.command("list")
def user_list() -> None:
    """Users, their roles, whether they can log in, and their live tokens."""
    with _session() as session:
        users = user_rows(session)
    rows = [
        (u.name, u.role, "yes" if u.can_log_in else "no", str(u.live_tokens), _when(u.created_at))
        for u in users
    ]
    _table(("user", "role", "password", "live tokens", "created"), rows)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _session():
    return session_scope(get_settings().database_url)


def _checked(make):
    try:
        return make()
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
