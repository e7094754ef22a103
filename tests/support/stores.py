"""Opening each storage adapter the same way, for contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from popflow.bootstrap import Storage, memory_storage, postgres_storage
from popflow.engine.worker import WorkerSettings
from popflow.events.postgres import PostgresEventStore
from popflow.settings import Settings
from tests.conftest import fresh_pool

ADAPTERS = ["memory", "postgres"]

LONG_POLL = 30.0
"""Longer than any test waits: whatever a worker does in time, a wake-up caused."""


def engine_settings(**worker: Any) -> Settings:
    """Settings of an engine that is handed its storage (``open_engine(storage=...)``),
    polling too rarely to matter: ``worker`` sets the worker's other settings."""
    return Settings(
        dsn="memory://",  # unused: the engine is handed its storage
        poll_interval=LONG_POLL,
        worker=WorkerSettings(poll_interval=LONG_POLL, **worker),
    )


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
