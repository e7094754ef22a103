"""The PostgreSQL event store's schema: migrations, jsonb payloads, old event shapes."""

from __future__ import annotations

import asyncpg
import pytest

from popflow.errors import InfrastructureError
from popflow.events.codec import Codec
from popflow.events.postgres import PostgresEventStore
from popflow.events.store import AppendRequest
from popflow.events.vocabulary import OperationProgressed, OperationStarted
from popflow.migrations import available, migrate
from tests.unit.test_codec import LEGACY


async def test_migrations_apply_once(database_dsn: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        assert await migrate(conn) == []  # the template database is already migrated
        await conn.execute("DROP SCHEMA popflow CASCADE")
        assert [m.version for m in await migrate(conn)] == [m.version for m in available()]
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_an_edited_migration_is_refused(database_dsn: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        await conn.execute("UPDATE popflow.schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(InfrastructureError, match="must never be edited"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_payloads_are_jsonb_that_sql_can_inspect(pg_pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pg_pool)
    await store.append(
        [AppendRequest("s", 0, [OperationStarted(operation="encode", attempt=2, dispatch=1)])]
    )
    row = await pg_pool.fetchrow(
        "SELECT data->>'operation' AS op, (data->>'attempt')::int AS attempt FROM popflow.events"
        " WHERE type = 'operation.started'"
    )
    assert row is not None
    assert (row["op"], row["attempt"]) == ("encode", 2)


async def test_a_stored_event_of_an_old_shape_loads_through_its_upcaster(
    pg_pool: asyncpg.Pool,
) -> None:
    await pg_pool.execute(
        "INSERT INTO popflow.streams VALUES ('old', 1);"
        "INSERT INTO popflow.events (position, stream_id, version, type, data) VALUES"
        " (nextval('popflow.event_position'), 'old', 1, 'operation.progress-reported',"
        '  \'{"type": "operation.progress-reported", "operation": "a", "percent": 40}\')'
    )
    store = PostgresEventStore(pg_pool, codec=Codec([LEGACY]))
    [recorded] = await store.read_stream("old")
    assert recorded.event == OperationProgressed(operation="a", attempt=1, percent_complete=40.0)
    assert recorded.type == "operation.progressed"
