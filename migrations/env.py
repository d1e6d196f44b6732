"""Alembic environment: one migration history for PostgreSQL and SQLite.

The URL comes from the caller (`config.attributes["connection"]` or the `sqlalchemy.url`
option set by `nhr db upgrade`) or from NHR_DATABASE_URL. SQLite uses batch mode so that
ALTERs work there too.
"""

from __future__ import annotations

from alembic import context

from registry.database import make_engine
from registry.schema import metadata
from registry.settings import Settings

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run against a database")
run_migrations_online()
