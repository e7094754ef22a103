"""Appends are announced after they commit, never from inside their transaction: a
transaction that notifies holds a server-wide lock until its commit is durable, which
would make concurrent appends commit one at a time (migration 0009)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from popflow.errors import InfrastructureError
from popflow.events.postgres import CHANNEL, PostgresEventStore
from popflow.events.store import Appended, AppendRequest
from popflow.events.vocabulary import AgendaDispatched

QUIET = 0.3
"""Long enough for a notification that was sent to arrive."""


def request(stream: str, expected: int = 0) -> AppendRequest:
    return AppendRequest(stream, expected, [AgendaDispatched(worker_id="w", dispatch=1)])


class Heard:
    """The notifications on ``popflow_events`` that a connection of its own receives."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self._arrived = anyio.Event()

    def __call__(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.payloads.append(str(payload))
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait_for(self, payload: str) -> None:
        with anyio.fail_after(5):
            while payload not in self.payloads:
                await self._arrived.wait()


@pytest.fixture
async def heard(database_dsn: str) -> AsyncIterator[Heard]:
    conn = await asyncpg.connect(database_dsn)
    heard = Heard()
    await conn.add_listener(CHANNEL, heard)
    try:
        yield heard
    finally:
        await conn.close()


@pytest.fixture
async def store(database_dsn: str) -> AsyncIterator[PostgresEventStore]:
    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=4)
    store = PostgresEventStore(pool)
    try:
        yield store
    finally:
        await store.close()
        await pool.close()


async def test_the_append_function_itself_notifies_nobody(database_dsn: str, heard: Heard) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        appended = await conn.fetchval(
            "SELECT appended FROM popflow.append_events(ARRAY['s'], ARRAY[0::bigint], ARRAY[1],"
            " ARRAY[1], ARRAY[1::bigint], ARRAY['agenda.dispatched'],"
            """ ARRAY['{"type": "agenda.dispatched", "workerId": "w", "dispatch": 1}'::jsonb])"""
        )
    finally:
        await conn.close()
    assert appended
    await anyio.sleep(QUIET)
    assert heard.payloads == []


async def test_other_processes_hear_of_an_append_once_it_committed(
    store: PostgresEventStore, heard: Heard
) -> None:
    [appended] = await store.append([request("s")])
    assert isinstance(appended, Appended)
    await heard.wait_for(str(appended.last_position))
    async with store.transaction() as tx:
        [in_tx] = await tx.append([request("t")])
        assert isinstance(in_tx, Appended)
        await anyio.sleep(QUIET)
        assert str(in_tx.last_position) not in heard.payloads  # not before the commit
    await heard.wait_for(str(in_tx.last_position))


async def test_a_rolled_back_append_is_not_announced(
    store: PostgresEventStore, heard: Heard
) -> None:
    async def append_then_fail() -> None:
        async with store.transaction() as tx:
            await tx.append([request("s")])
            await tx.conn.execute("SELECT 1 / 0")

    with pytest.raises(InfrastructureError):
        await append_then_fail()
    await anyio.sleep(QUIET)
    assert heard.payloads == []
    assert await store.head() == 0


async def test_waiters_of_the_appending_process_wake_without_a_notification(
    store: PostgresEventStore,
) -> None:
    """The store does not listen here: its own appends wake its waiters all the same."""
    woke: list[bool] = []

    async def waiter() -> None:
        await store.wait_for_append(0, timeout=5)
        woke.append(True)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            await store.append([request("s")])
    assert woke == [True]
