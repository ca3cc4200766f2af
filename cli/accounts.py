"""`scanq token ...` and `scanq user ...`: accounts, made on the server against the
database (like `scanq migrate`), not through the API."""

from __future__ import annotations

import sys

import click
from sqlalchemy import update

from db.accounts import AccountError, audit, create_token, ensure_user, get_user
from db.models import ApiToken
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
        existing = get_user(session, name)
        role = "admin" if admin else (existing.role if existing else "user")
        user = _checked(lambda: ensure_user(session, name, role))
        user.role = role
        value = create_token(session, user, label)
        audit(session, None, "create_token", f"user:{name}", {"role": role, "label": label})
    click.echo(value)


@token.command("revoke")
@click.option("--user", "name", required=True)
def token_revoke(name: str) -> None:
    """Revoke every token of a user."""
    with _session() as session:
        user = get_user(session, name)
        if user is None:
            raise click.ClickException(f"no user {name}")
        n = session.execute(
            update(ApiToken).where(ApiToken.user_id == user.id).values(revoked=True)
        ).rowcount
        audit(session, None, "revoke_tokens", f"user:{name}", {"tokens": n})
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


def _session():
    return session_scope(get_settings().database_url)


def _checked(make):
    try:
        return make()
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
