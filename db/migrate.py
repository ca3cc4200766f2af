"""Schema changes go through Alembic; `upgrade()` brings any database to the newest
revision and is safe to call on every start, from several processes at once: on
PostgreSQL an advisory lock serialises them (the second finds nothing to do)."""

from __future__ import annotations

from functools import cache

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from db.session import get_engine

_LOCK_ID = 0x5CA9  # any constant shared by every ScanQ process


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "db:migrations")
    # ConfigParser interpolation would eat the % of URL-encoded passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _run(url: str, fn, revision: str) -> None:
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        cfg.attributes["connection"] = conn
        fn(cfg, revision)


def upgrade(url: str, revision: str = "head") -> None:
    _run(url, command.upgrade, revision)


def downgrade(url: str, revision: str) -> None:
    _run(url, command.downgrade, revision)


@cache
def _revisions() -> tuple[str, frozenset[str]]:
    """(newest revision, every revision) of the migrations this code ships."""
    script = ScriptDirectory.from_config(alembic_config(""))
    return script.get_current_head(), frozenset(s.revision for s in script.walk_revisions())


def schema_problem(url: str) -> str | None:
    """Why this code cannot use the database's schema, in one line for an operator, or
    None when the schema is at this code's newest revision. A web or worker started
    before `scanq migrate` has run (a deploy in progress, a new DATABASE_URL) fails on
    missing tables and columns in ways that look like outages; this names the cause.
    Raises SQLAlchemy's OperationalError when the database cannot be reached."""
    head, known = _revisions()
    with get_engine(url).connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return None
    if current is None:
        return "the database has no ScanQ schema yet: run `scanq migrate`"
    if current not in known:
        return f"the database's schema ({current}) is newer than this ScanQ ({head}): upgrade ScanQ"
    return f"the database's schema is at {current} and this ScanQ needs {head}: run `scanq migrate`"
