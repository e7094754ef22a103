"""Invariant 3: a reader that has seen position N never later misses an event below N.

The classic trap: with a plain sequence, transaction A takes position 10, transaction B
takes 11 and commits first; a reader sees 11, moves its cursor past it, and never sees 10
when A commits. popflow's append takes an advisory lock before assigning positions and
holds it to commit, so positions become visible in order. These tests hammer that with
many concurrent writers and show the slow-committer case directly.
"""

from __future__ import annotations

import anyio
import asyncpg

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

    async def fast_writer() -> None:
        await store.append(
            [AppendRequest("fast", 0, [AgendaDispatched(worker_id="b", dispatch=1)])]
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_writer)
        await first_holds_positions.wait()
        tg.start_soon(fast_writer)
        await anyio.sleep(0.3)
        # The fast writer is waiting for the slow one: nothing is visible yet.
        assert await store.read_all(after=0) == []
        release_first.set()

    streams = [e.stream_id for e in await store.read_all(after=0)]
    assert streams == ["slow", "fast"]
