"""Opening each storage adapter the same way, for contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from popflow.bootstrap import Storage
from popflow.engine.memory_queue import MemoryWorkQueue
from popflow.engine.postgres_queue import PostgresWorkQueue
from popflow.events.memory import MemoryEventStore
from popflow.events.postgres import PostgresEventStore
from popflow.projections.memory import MemoryProgressStore
from popflow.projections.postgres import PostgresProgressStore
from tests.conftest import fresh_pool

ADAPTERS = ["memory", "postgres"]


@asynccontextmanager
async def storage_for(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    """Storage of one kind: in memory, or on a fresh PostgreSQL database."""
    if kind == "memory":
        events = MemoryEventStore()
        yield Storage(events, MemoryWorkQueue(events), MemoryProgressStore())
        return
    async with fresh_pool(request.getfixturevalue("postgres_template")) as pool:
        store = PostgresEventStore(pool)
        await store.listen()
        try:
            yield Storage(store, PostgresWorkQueue(store), PostgresProgressStore(pool), pool)
        finally:
            await store.close()
