"""Migrations build exactly the schema of models.py, on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, pool, select
from sqlalchemy.orm import Session

from facespeech.db import (
    ApiKey,
    Artifact,
    Base,
    Dataset,
    Job,
    JobEvent,
    JobKind,
    JobStatus,
    Tenant,
    TrainedModel,
    upgrade_head,
)
from facespeech.db.migrate import alembic_config


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _schema_diffs(url: str) -> list[object]:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs: list[object] = compare_metadata(context, Base.metadata)
        current = context.get_current_revision()
    engine.dispose()
    assert current == _head()
    return diffs


def test_upgrade_head_matches_the_models(database_url: str) -> None:
    upgrade_head(database_url)

    assert _schema_diffs(database_url) == []


def test_upgrade_head_twice_is_a_no_op(database_url: str) -> None:
    upgrade_head(database_url)
    upgrade_head(database_url)

    engine = create_engine(database_url, poolclass=pool.NullPool)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_concurrent_upgrades_all_succeed(database_url: str) -> None:
    # Separate processes, as several services starting at once would be.
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as workers:
        workers.map(upgrade_head, [database_url] * 3)

    assert _schema_diffs(database_url) == []


def test_every_table_round_trips(database_url: str) -> None:
    upgrade_head(database_url)
    engine = create_engine(database_url, poolclass=pool.NullPool)
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    with Session(engine) as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        dataset = Dataset(
            tenant_id=tenant.id, name="talk", source_kind="video", source_key="d/src.mp4"
        )
        session.add_all([ApiKey(tenant_id=tenant.id, key_hash="a" * 64, prefix="fs_abc"), dataset])
        session.flush()
        job = Job(
            tenant_id=tenant.id,
            kind=JobKind.train,
            dataset_id=dataset.id,
            params={"preset": "tiny", "overrides": {"steps": 2}},
            started_at=started,
        )
        session.add(job)
        session.flush()
        session.add_all(
            [
                JobEvent(job_id=job.id, kind="stage", message="training", data={"step": 1}),
                TrainedModel(
                    tenant_id=tenant.id, dataset_id=dataset.id, job_id=job.id, preset="tiny"
                ),
                Artifact(
                    tenant_id=tenant.id,
                    job_id=job.id,
                    kind="video",
                    key="r/out.mp4",
                    size_bytes=5 * 1024**3,  # past 32 bits: the column must be BIGINT
                    sha256="b" * 64,
                    content_type="video/mp4",
                ),
            ]
        )
        session.commit()

    with Session(engine) as session:
        loaded = session.scalars(select(Job)).one()
        assert loaded.status is JobStatus.queued
        assert loaded.params == {"preset": "tiny", "overrides": {"steps": 2}}
        assert loaded.started_at is not None
        assert loaded.started_at.replace(tzinfo=UTC) == started
        assert session.scalars(select(Artifact)).one().size_bytes == 5 * 1024**3
        assert session.scalars(select(JobEvent)).one().data == {"step": 1}
        for table in Base.metadata.sorted_tables:
            assert session.execute(select(table)).first() is not None, table.name
    engine.dispose()
