"""The WorkQueue contract, run against the memory and PostgreSQL adapters.

Claims are exclusive (two claimers never get the same agenda), follow queue order, carry
the agenda's full history, respect insights and held agendas; leases expire when a worker
stops heartbeating and never while it does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from popflow.bootstrap import Storage
from popflow.engine.decide import submitted
from popflow.engine.queue import WorkerInfo
from popflow.events.store import AppendRequest, Conflict
from popflow.events.vocabulary import (
    AgendaDispatched,
    AgendaFailed,
    AgendaInsight,
    AgendaReclaimed,
    AgendaStarted,
    agenda_stream,
)
from tests.support.agendas import agenda, op
from tests.support.scheduling import Farm
from tests.support.stores import ADAPTERS, storage_for


@pytest.fixture(params=ADAPTERS)
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    async with storage_for(request.param, request) as opened:
        yield opened


async def submit(
    storage: Storage, agenda_id: str, *, insight: str = "default", **params: Any
) -> None:
    event = submitted(
        agenda(op("a"), **params),
        agenda_id=agenda_id,
        progress_id=f"p-{agenda_id}",
        insight=AgendaInsight(resource_pool_id="pool", insight_id=insight),
    )
    await storage.events.append([AppendRequest(agenda_stream(agenda_id), 0, [event])])


async def worker(storage: Storage, worker_id: str) -> str:
    await storage.queue.register(WorkerInfo(worker_id, "host", 1))
    return worker_id


async def test_claims_follow_queue_order_and_carry_the_history(storage: Storage) -> None:
    for n in range(3):
        await submit(storage, f"a{n}")
    w = await worker(storage, "w1")
    claimed = await storage.queue.claim(w, 2)
    assert [c.agenda_id for c in claimed] == ["a0", "a1"]
    history = claimed[0].history
    assert [e.type for e in history] == ["agenda.submitted", "agenda.dispatched"]
    assert history[-1].event == AgendaDispatched(worker_id="w1", dispatch=1)
    assert [c.agenda_id for c in await storage.queue.claim(w, 5)] == ["a2"]
    assert await storage.queue.claim(w, 5) == []


async def test_concurrent_claimers_never_share_an_agenda(storage: Storage) -> None:
    for n in range(30):
        await submit(storage, f"a{n}")
    got: Counter[str] = Counter()

    async def claimer(name: str) -> None:
        w = await worker(storage, name)
        while claimed := await storage.queue.claim(w, 3):
            got.update(c.agenda_id for c in claimed)

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(claimer, f"w{n}")
    assert sorted(got) == sorted(f"a{n}" for n in range(30))
    assert set(got.values()) == {1}


async def test_claims_only_from_the_requested_insights(storage: Storage) -> None:
    await submit(storage, "gpu-job", insight="gpu")
    await submit(storage, "cpu-job", insight="cpu")
    w = await worker(storage, "w1")
    assert [c.agenda_id for c in await storage.queue.claim(w, 5, insights=["gpu"])] == ["gpu-job"]
    assert [c.agenda_id for c in await storage.queue.claim(w, 5, insights=None)] == ["cpu-job"]


async def test_held_agendas_are_never_claimed(storage: Storage) -> None:
    await submit(storage, "held", doNotRun=None)
    assert await storage.queue.claim(await worker(storage, "w1"), 5) == []


async def test_leases_expire_only_for_silent_workers(storage: Storage) -> None:
    await submit(storage, "a")
    await submit(storage, "b")
    alive, dead = await worker(storage, "alive"), await worker(storage, "dead")
    await storage.queue.claim(alive, 1)
    await storage.queue.claim(dead, 1)
    assert await storage.queue.expired_leases(60, 10) == []
    await storage.queue.retire(dead)
    [expired] = await storage.queue.expired_leases(60, 10)
    assert (expired.agenda_id, expired.worker_id, expired.dispatch) == ("b", "dead", 1)
    assert await storage.queue.heartbeat(alive)
    assert not await storage.queue.heartbeat(dead)


async def test_a_lease_expires_after_the_timeout_without_heartbeats(storage: Storage) -> None:
    await submit(storage, "a")
    w = await worker(storage, "w1")
    await storage.queue.claim(w, 1)
    await anyio.sleep(0.3)
    assert [e.agenda_id for e in await storage.queue.expired_leases(0.2, 10)] == ["a"]
    await storage.queue.heartbeat(w)
    assert await storage.queue.expired_leases(0.2, 10) == []


async def test_a_rebuild_reproduces_the_queue(storage: Storage) -> None:
    for n in range(4):
        await submit(storage, f"a{n}")
    await submit(storage, "held", doNotRun=True)
    w = await worker(storage, "w1")
    [first, second] = await storage.queue.claim(w, 2)
    state_events = [e.event for e in second.history]
    reclaim = AgendaReclaimed(worker_id="w1", dispatch=1, reason="test")
    await storage.events.append([AppendRequest(agenda_stream("a1"), len(state_events), [reclaim])])
    done = AgendaFailed(dispatch=1, failed_operations=[])
    await storage.events.append([AppendRequest(agenda_stream("a0"), len(first.history), [done])])
    before = await storage.queue.entries()
    assert [(e.agenda_id, e.status) for e in before] == [
        ("a1", "ready"),
        ("a2", "ready"),
        ("a3", "ready"),
    ]
    await storage.queue.rebuild()
    assert await storage.queue.entries() == before


async def test_claims_and_appends_to_claimed_agendas_never_deadlock(storage: Storage) -> None:
    """Claimers race while every claimed agenda is started at once (as an execution would):
    claims must not hold locks that an append to a just-claimed agenda waits for."""
    agendas = 300
    for n in range(agendas):
        await submit(storage, f"a{n:03}")
    started: list[str] = []

    async def claimer(name: str) -> None:
        w = await worker(storage, name)
        while claimed := await storage.queue.claim(w, 2):
            for claim in claimed:
                start = AgendaStarted(worker_id=name, dispatch=1)
                stream = agenda_stream(claim.agenda_id)
                [result] = await storage.events.append(
                    [AppendRequest(stream, len(claim.history), [start])]
                )
                assert not isinstance(result, Conflict)
                started.append(claim.agenda_id)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(claimer, f"w{n}")
    assert sorted(started) == [f"a{n:03}" for n in range(agendas)]


async def woken(storage: Storage, mark: int, timeout: float) -> bool:
    """Whether a ready wake-up after ``mark`` arrives within ``timeout`` seconds."""
    await storage.queue.wait_for_ready(mark, timeout)
    return storage.queue.ready_mark() > mark


async def test_ready_wake_ups_come_only_when_something_may_be_claimable(
    storage: Storage,
) -> None:
    """Agendas entering (or re-entering) the line wake claimers, and so does one leaving an
    insight with a queueSize while others wait there (it may have room); the events of a
    claim and of the execution that follows do not."""
    w = await worker(storage, "w1")  # listening from here on
    mark = storage.queue.ready_mark()
    await submit(storage, "a0")
    assert await woken(storage, mark, 5)

    mark = storage.queue.ready_mark()
    [claim] = await storage.queue.claim(w, 1)
    stream, version = agenda_stream("a0"), len(claim.history)
    start = AgendaStarted(worker_id=w, dispatch=1)
    await storage.events.append([AppendRequest(stream, version, [start])])
    assert not await woken(storage, mark, 0.3)

    reclaim = AgendaReclaimed(worker_id=w, dispatch=1, reason="test")
    await storage.events.append([AppendRequest(stream, version + 1, [reclaim])])
    assert await woken(storage, mark, 5)

    [claim] = await storage.queue.claim(w, 1)
    mark, version = storage.queue.ready_mark(), len(claim.history)
    done = AgendaFailed(dispatch=2, failed_operations=[])
    await storage.events.append([AppendRequest(stream, version, [done])])
    assert not await woken(storage, mark, 0.3)  # nothing else waits

    farm = Farm(storage)
    await farm.pool()
    await farm.insight("bounded", queueSize=1)
    await submit(storage, "a1", insight="bounded")
    await submit(storage, "a2", insight="bounded")
    [claim] = await storage.queue.claim(w, 1)
    assert await storage.queue.claim(w, 1) == []  # the insight is full
    mark = storage.queue.ready_mark()
    done = AgendaFailed(dispatch=1, failed_operations=[])
    await storage.events.append([AppendRequest(agenda_stream("a1"), len(claim.history), [done])])
    assert await woken(storage, mark, 5)  # a2 waits, and now fits
    assert [c.agenda_id for c in await storage.queue.claim(w, 1)] == ["a2"]
