"""Alembic environment. `db.migrate` hands over an open connection (holding the
migration lock); the `alembic` command line falls back to DATABASE_URL."""

from alembic import context
from sqlalchemy import create_engine, pool

from db.models import Base
from scanq.settings import load_settings

config = context.config


def _configure_and_run(**kwargs) -> None:
    # render_as_batch lets ALTER TABLE migrations work on SQLite as well.
    context.configure(target_metadata=Base.metadata, render_as_batch=True, **kwargs)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if context.is_offline_mode():
    _configure_and_run(url=config.get_main_option("sqlalchemy.url") or load_settings().database_url)
elif connection is not None:
    _configure_and_run(connection=connection)
else:
    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure_and_run(connection=conn)
