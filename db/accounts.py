"""Users, API tokens and the audit trail.

Tokens are random (secrets.token_urlsafe) and only their SHA-256 is stored, so a
database leak does not leak working tokens; the token itself is shown once, when it is
made. Passwords (for the pages' login) are salted hashes from Werkzeug. Every action
that matters later (who submitted a job, who changed a label, who activated a model)
writes an audit row."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from db.models import ROLES, ApiToken, AuditEvent, User, utcnow

# How stale "last used" may be. Finer would cost a database write per request.
TOKEN_TOUCH_INTERVAL = timedelta(hours=1)


class AccountError(ValueError):
    """A request about users or tokens that cannot be done; the message says why."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def get_user(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def ensure_user(
    session: Session, name: str, role: str = "user", password: str | None = None
) -> User:
    """The user called `name`, created if missing (with `role`)."""
    name = (name or "").strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AccountError("user names are 1-64 letters, digits or . _ - @")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    user = get_user(session, name)
    if user is None:
        user = User(name=name, role=role)
        session.add(user)
    if password is not None:
        user.password_hash = generate_password_hash(password)
    session.flush()
    return user


def create_token(session: Session, user: User, label: str = "") -> str:
    """A new token for `user`; the only time it exists in clear."""
    token = "sq_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_digest(token), label=label[:64]))
    session.flush()
    return token


def issue_token(session: Session, name: str, role: str | None, label: str, by: str | None) -> str:
    """A new token for `name`, made a user if missing. The role changes only when one is
    given (a new user without one is a plain user), so a token for an existing admin
    keeps them an admin. Audited as done `by` (None: the server's command line)."""
    existing = get_user(session, name)
    role = role or (existing.role if existing else "user")
    user = ensure_user(session, name, role)
    user.role = role
    value = create_token(session, user, label)
    audit(session, by, "create_token", f"user:{name}",
          {"role": role, "label": label, "new_user": existing is None})  # fmt: skip
    return value


@dataclass(frozen=True)
class TokenMatch:
    user: User
    token_id: int
    last_used_at: datetime | None

    def touch_due(self, now: datetime | None = None) -> bool:
        if self.last_used_at is None:
            return True
        last = self.last_used_at
        last = last if last.tzinfo else last.replace(tzinfo=timezone.utc)  # SQLite: naive
        return (now or utcnow()) - last >= TOKEN_TOUCH_INTERVAL


def match_token(session: Session, token: str) -> TokenMatch | None:
    """The live token's user, in one indexed read. Recording the use is separate
    (`touch_token`, after the response), so reads keep working while the database
    refuses writes (SQLite locked, a read-only replica)."""
    row = session.execute(
        select(User, ApiToken.id, ApiToken.last_used_at)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == _digest(token), ApiToken.revoked.is_(False))
    ).first()
    return TokenMatch(*row) if row else None


def touch_token(session: Session, token_id: int, now: datetime | None = None) -> bool:
    """Record a use of the token; a conditional update, so of many concurrent requests
    with a stale time one writes and the others change nothing."""
    now = now or utcnow()
    stale = or_(
        ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - TOKEN_TOUCH_INTERVAL
    )
    done = session.execute(
        update(ApiToken).where(ApiToken.id == token_id, stale).values(last_used_at=now)
    )
    return done.rowcount == 1


@dataclass(frozen=True)
class TokenRow:
    """A token as an admin sees it: never its value."""

    id: int
    user: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


@dataclass(frozen=True)
class UserRow:
    name: str
    role: str
    can_log_in: bool
    live_tokens: int
    created_at: datetime


def token_rows(session: Session, user_name: str | None = None) -> list[TokenRow]:
    query = select(ApiToken, User.name).join(User, User.id == ApiToken.user_id)
    if user_name is not None:
        if get_user(session, user_name) is None:
            raise AccountError(f"no user {user_name}")
        query = query.where(User.name == user_name)
    return [
        TokenRow(t.id, owner, t.label, t.created_at, t.last_used_at, t.revoked)
        for t, owner in session.execute(query.order_by(ApiToken.id))
    ]


def user_rows(session: Session) -> list[UserRow]:
    live = dict(session.execute(
        select(ApiToken.user_id, func.count()).where(ApiToken.revoked.is_(False))
        .group_by(ApiToken.user_id)
    ).all())  # fmt: skip
    return [
        UserRow(u.name, u.role, bool(u.password_hash), live.get(u.id, 0), u.created_at)
        for u in session.scalars(select(User).order_by(User.name))
    ]


def revoke_token(session: Session, token_id: int, by: str | None) -> str:
    """Revoke one token; returns its user's name. Audited as done `by` (None: the
    server's command line)."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise AccountError(f"no token {token_id}")
    token.revoked = True
    owner = session.get(User, token.user_id).name
    audit(session, by, "revoke_token", f"user:{owner}", {"token": token_id})
    return owner


def revoke_user_tokens(session: Session, name: str, by: str | None) -> int:
    """Revoke every token of a user; returns how many there were."""
    user = get_user(session, name)
    if user is None:
        raise AccountError(f"no user {name}")
    n = session.execute(
        update(ApiToken).where(ApiToken.user_id == user.id).values(revoked=True)
    ).rowcount
    audit(session, by, "revoke_tokens", f"user:{name}", {"tokens": n})
    return n


def check_password(session: Session, name: str, password: str) -> User | None:
    user = get_user(session, name)
    if user is None or not user.password_hash:
        check_password_hash("pbkdf2:sha256:600000$x$" + "0" * 64, password)  # same time
        return None
    return user if check_password_hash(user.password_hash, password) else None


def audit(
    session: Session, user: str | None, action: str, target: str, detail: dict | None = None
) -> None:
    session.add(AuditEvent(user=user, action=action, target=target, detail=detail or {}))
