"""Alembic environment. facespeech.db.migrate.upgrade_head() drives it with a connection;
`alembic -c <ini> upgrade head` also works and falls back to Settings for the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from facespeech.config import get_settings
from facespeech.db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (given := config.attributes.get("connection")) is not None:
    run_online(given)
else:
    with create_engine(_url(), poolclass=pool.NullPool).connect() as connection:
        run_online(connection)
