"""The EventStore contract, run against every adapter (memory and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from popflow.errors import ConcurrencyConflict
from popflow.events.memory import MemoryEventStore
from popflow.events.postgres import PostgresEventStore
from popflow.events.store import (
    Appended,
    AppendRequest,
    Conflict,
    EventStore,
    RecordedEvent,
    append_one,
)
from popflow.events.vocabulary import AgendaDispatched, AgendaStarted, Event
from tests.conftest import fresh_pool


def dispatched(n: int) -> Event:
    return AgendaDispatched(worker_id=f"w{n}", dispatch=n)


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        yield MemoryEventStore()
        return
    async with fresh_pool(request.getfixturevalue("postgres_template")) as pool:
        pg = PostgresEventStore(pool)
        await pg.listen()
        try:
            yield pg
        finally:
            await pg.close()


async def test_a_new_stream_starts_at_version_zero(store: EventStore) -> None:
    assert await store.stream_version("s") == 0
    assert await store.read_stream("s") == []
    assert await store.head() == 0


async def test_append_then_read_back_in_order(store: EventStore) -> None:
    result = await append_one(store, AppendRequest("s", 0, [dispatched(1), dispatched(2)]))
    assert result.version == 2
    events = await store.read_stream("s")
    assert [e.version for e in events] == [1, 2]
    assert [e.event for e in events] == [dispatched(1), dispatched(2)]
    assert [e.type for e in events] == ["agenda.dispatched"] * 2
    assert events[1].position == result.last_position
    assert await store.stream_version("s") == 2


async def test_a_stale_append_is_a_conflict_and_writes_nothing(store: EventStore) -> None:
    await append_one(store, AppendRequest("s", 0, [dispatched(1)]))
    with pytest.raises(ConcurrencyConflict) as caught:
        await append_one(store, AppendRequest("s", 0, [dispatched(2)]))
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert [e.event for e in await store.read_stream("s")] == [dispatched(1)]


async def test_an_append_ahead_of_the_stream_is_a_conflict(store: EventStore) -> None:
    [result] = await store.append([AppendRequest("s", 3, [dispatched(1)])])
    assert result == Conflict("s", 3, 0)
    assert await store.stream_version("s") == 0


async def test_a_batch_commits_each_request_on_its_own_merits(store: EventStore) -> None:
    await append_one(store, AppendRequest("b", 0, [dispatched(1)]))
    results = await store.append(
        [
            AppendRequest("a", 0, [dispatched(1)]),
            AppendRequest("b", 0, [dispatched(9)]),  # stale
            AppendRequest("c", 0, [dispatched(1), dispatched(2)]),
        ]
    )
    assert isinstance(results[0], Appended)
    assert results[1] == Conflict("b", 0, 1)
    assert isinstance(results[2], Appended)
    assert results[2].version == 2
    assert await store.stream_version("b") == 1


async def test_each_appended_request_reports_where_its_events_landed(store: EventStore) -> None:
    await append_one(store, AppendRequest("b", 0, [dispatched(1)]))
    results = await store.append(
        [
            AppendRequest("a", 0, [dispatched(1), dispatched(2)]),
            AppendRequest("b", 0, [dispatched(9)]),  # stale: takes no position
            AppendRequest("c", 0, []),  # nothing to append: a successful no-op
            AppendRequest("d", 0, [dispatched(1), dispatched(2), dispatched(3)]),
        ]
    )
    assert [type(r) for r in results] == [Appended, Conflict, Appended, Appended]
    no_op = results[2]
    assert isinstance(no_op, Appended)
    assert no_op.version == 0
    for result in (results[0], results[3]):
        assert isinstance(result, Appended)
        stream = await store.read_stream(result.stream_id)
        assert stream[-1].position == result.last_position
        assert _positions(stream) == sorted(_positions(stream))
    everything = await store.read_all(after=0)
    assert [(e.stream_id, e.version) for e in everything] == [
        ("b", 1),
        ("a", 1),
        ("a", 2),
        ("d", 1),
        ("d", 2),
        ("d", 3),
    ]


async def test_requests_for_one_stream_in_a_batch_apply_in_order(store: EventStore) -> None:
    results = await store.append(
        [
            AppendRequest("s", 0, [dispatched(1)]),
            AppendRequest("s", 1, [dispatched(2)]),  # chained on the first
            AppendRequest("s", 1, [dispatched(3)]),  # raced the second: stale
        ]
    )
    assert [type(r) for r in results] == [Appended, Appended, Conflict]
    assert [e.event for e in await store.read_stream("s")] == [dispatched(1), dispatched(2)]


async def test_read_stream_between_versions(store: EventStore) -> None:
    await append_one(store, AppendRequest("s", 0, [dispatched(n) for n in range(1, 6)]))
    window = await store.read_stream("s", after_version=1, to_version=3)
    assert [e.version for e in window] == [2, 3]


async def test_read_all_pages_through_the_global_order(store: EventStore) -> None:
    for n in range(1, 6):
        await append_one(store, AppendRequest(f"s{n}", 0, [dispatched(n)]))
    first = await store.read_all(after=0, limit=3)
    rest = await store.read_all(after=first[-1].position, limit=10)
    seen = first + rest
    assert [e.stream_id for e in seen] == [f"s{n}" for n in range(1, 6)]
    positions = [e.position for e in seen]
    assert positions == sorted(positions)
    assert await store.head() == positions[-1]


async def test_events_keep_their_fields_through_storage(store: EventStore) -> None:
    event = AgendaStarted(worker_id="w-1", dispatch=7)
    await append_one(store, AppendRequest("s", 0, [event]))
    [recorded] = await store.read_all()
    assert recorded.event == event
    assert recorded.recorded_at.tzinfo is not None


async def test_wait_for_append_wakes_up_on_a_new_event(store: EventStore) -> None:
    head = await store.head()
    woke: list[bool] = []

    async def waiter() -> None:
        with anyio.fail_after(5):
            await store.wait_for_append(head, timeout=5)
        woke.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.05)
        await append_one(store, AppendRequest("s", 0, [dispatched(1)]))
    assert woke == [True]


async def test_wait_for_append_times_out_quietly(store: EventStore) -> None:
    with anyio.fail_after(2):
        await store.wait_for_append(await store.head(), timeout=0.05)


async def test_concurrent_writers_to_one_stream_never_both_win(store: EventStore) -> None:
    wins: list[int] = []

    async def writer(n: int) -> None:
        [result] = await store.append([AppendRequest("s", 0, [dispatched(n)])])
        if isinstance(result, Appended):
            wins.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(writer, n)
    assert len(wins) == 1
    assert await store.stream_version("s") == 1


def _positions(events: list[RecordedEvent]) -> list[int]:
    return [e.position for e in events]


async def test_read_streams_returns_each_stream_whole(store: EventStore) -> None:
    await append_one(store, AppendRequest("a", 0, [dispatched(1), dispatched(2)]))
    await append_one(store, AppendRequest("b", 0, [dispatched(3)]))
    streams = await store.read_streams(["a", "b", "missing"])
    assert sorted(streams) == ["a", "b"]
    assert [e.event for e in streams["a"]] == [dispatched(1), dispatched(2)]
