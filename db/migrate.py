"""Schema changes go through Alembic; `upgrade()` brings any database to the newest
revision and is safe to call on every start, from several processes at once: on
PostgreSQL an advisory lock serialises them (the second finds nothing to do)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
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
