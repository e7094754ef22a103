"""Opening each storage adapter the same way, for contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from popflow.bootstrap import Storage, memory_storage, postgres_storage
from popflow.events.postgres import PostgresEventStore
from tests.conftest import fresh_pool

ADAPTERS = ["memory", "postgres"]


@asynccontextmanager
async def storage_for(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    """Storage of one kind: in memory, or on a fresh PostgreSQL database."""
    if kind == "memory":
        yield memory_storage()
        return
    async with fresh_pool(request.getfixturevalue("postgres_template")) as pool:
        store = PostgresEventStore(pool)
        await store.listen()
        try:
            yield postgres_storage(store, pool)
        finally:
            await store.close()
