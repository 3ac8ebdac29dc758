"""Bring a database to the newest schema. Every process calls this on start, so it must be
safe when several run it at the same moment against the same database."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, make_url, pool, text

from facespeech.config import get_settings
from facespeech.db.session import ensure_sqlite_directory

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed 64-bit number works; this one spells "facespch" in ASCII, for pg_locks readers.
_PG_LOCK_KEY = 0x6661636573706368


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_head(url: str | None = None) -> None:
    """Apply every pending migration; a no-op when the schema is current."""
    url = url or get_settings().database_url
    # Own engine without pool or the app's SQLite pragmas: the lock below must be released
    # when the connection closes, and batch migrations want SQLite foreign keys off.
    ensure_sqlite_directory(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection, _migration_lock(connection):
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


@contextmanager
def _migration_lock(connection: Connection) -> Iterator[None]:
    """Serialise concurrent upgrades: the first applies them, the others then find none."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
        # Session-level lock: it outlives this commit, which leaves alembic a clean start.
        connection.commit()
        try:
            yield
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
            connection.commit()
        return
    database = make_url(str(connection.engine.url)).database
    if connection.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    # pysqlite runs DDL outside a transaction, so two processes could both see an empty
    # alembic_version and both create the tables: take a file lock beside the database.
    with open(Path(database).with_suffix(".migrate.lock"), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
