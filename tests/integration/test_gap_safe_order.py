"""Invariant 3: a reader that has seen position N never later misses an event below N.

The classic trap: with a plain sequence, transaction A takes position 10, transaction B
takes 11 and commits first; a reader sees 11, moves its cursor past it, and never sees 10
when A commits. popflow's appends commit in parallel, but each marks itself (a shared
advisory lock keyed by the lowest position it may take) before it takes positions, and
readers never return a position at or above the mark of an append still in flight
(migration 0006). These tests hammer that with many concurrent writers and show the
slow-committer case directly.
"""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from popflow.events.postgres import PostgresEventStore
from popflow.events.store import Appended, AppendRequest, RecordedEvent
from popflow.events.vocabulary import AgendaDispatched


async def test_a_tailing_reader_never_skips_an_event(pg_pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pg_pool)
    writers, batches, per_batch = 12, 40, 5
    seen: list[RecordedEvent] = []
    done = anyio.Event()

    async def writer(w: int) -> None:
        for b in range(batches):
            requests = [
                AppendRequest(
                    f"w{w}-b{b}-s{s}", 0, [AgendaDispatched(worker_id=f"w{w}", dispatch=1)]
                )
                for s in range(per_batch)
            ]
            results = await store.append(requests)
            assert all(isinstance(r, Appended) for r in results)

    async def reader() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            page = await store.read_all(after=cursor, limit=500)
            seen.extend(page)
            if page:
                cursor = page[-1].position
            elif finished:
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        async with anyio.create_task_group() as writing:
            for w in range(writers):
                writing.start_soon(writer, w)
        done.set()

    everything = await store.read_all(after=0, limit=100_000)
    assert len(everything) == writers * batches * per_batch
    assert [e.position for e in seen] == [e.position for e in everything]


async def test_a_slow_committer_holds_back_later_positions(pg_pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pg_pool)
    first_holds_positions = anyio.Event()
    release_first = anyio.Event()

    async def slow_writer() -> None:
        async with store.transaction() as tx:
            await tx.append(
                [AppendRequest("slow", 0, [AgendaDispatched(worker_id="a", dispatch=1)])]
            )
            first_holds_positions.set()
            await release_first.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_writer)
        await first_holds_positions.wait()
        with anyio.fail_after(5):  # appends do not wait for each other to commit
            [fast] = await store.append(
                [AppendRequest("fast", 0, [AgendaDispatched(worker_id="b", dispatch=1)])]
            )
        assert isinstance(fast, Appended)
        # The fast append has committed, above the slow one's position: nothing is visible.
        assert await store.read_all(after=0) == []
        assert await store.head() == 0
        release_first.set()

    everything = await store.read_all(after=0)
    assert [e.stream_id for e in everything] == ["slow", "fast"]
    assert isinstance(fast, Appended)
    assert await store.head() == fast.last_position == everything[-1].position


async def test_a_rolled_back_append_holds_nothing_back(pg_pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pg_pool)

    class Abandon(Exception):
        pass

    async def abandoned_append() -> None:
        async with store.transaction() as tx:
            await tx.append(
                [AppendRequest("gone", 0, [AgendaDispatched(worker_id="a", dispatch=1)])]
            )
            raise Abandon

    with pytest.raises(Abandon):
        await abandoned_append()
    [kept] = await store.append(
        [AppendRequest("kept", 0, [AgendaDispatched(worker_id="b", dispatch=1)])]
    )

    assert isinstance(kept, Appended)
    assert [e.stream_id for e in await store.read_all(after=0)] == ["kept"]
    assert await store.head() == kept.last_position


async def test_appends_of_one_stream_keep_version_and_position_order(
    pg_pool: asyncpg.Pool,
) -> None:
    store = PostgresEventStore(pg_pool)

    async def writer(w: int) -> None:
        for _ in range(20):
            while True:
                version = await store.stream_version("shared")
                event = AgendaDispatched(worker_id=f"w{w}", dispatch=version + 1)
                [result] = await store.append([AppendRequest("shared", version, [event])])
                if isinstance(result, Appended):
                    break

    async with anyio.create_task_group() as tg:
        for w in range(6):
            tg.start_soon(writer, w)

    events = await store.read_all(after=0, limit=1000)
    assert [e.version for e in events] == list(range(1, 121))
