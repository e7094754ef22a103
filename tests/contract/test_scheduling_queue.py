"""Scheduling through the WorkQueue, run against the memory and PostgreSQL adapters.

Insights and customers are made through the directory and agendas are submitted through
the agenda service, so each agenda reaches its insight's queue by routing, as in
production. Each insight's algorithm (FirstInFirstOut, RoundRobin with its stored cursor,
Priority with aging and retry boosts) decides the order of dispatch, ``queueSize`` bounds
what is leased, a claim's capacity is shared among insights, and ``insight_queues``
reports each queue. pop-spec §9 case 51 (the queue monitor) is here too, since it needs a
queue. Both adapters must dispatch the same agendas in the same order; the PostgreSQL one
also keeps the bound and the round-robin turns exact under concurrent claimers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from popflow.engine.postgres_queue import INSIGHT_LOCK_CLASS
from popflow.engine.queue import InsightQueue
from popflow.engine.scheduling import round_robin
from popflow.errors import InvalidRequest
from tests.support.scheduling import Farm
from tests.support.stores import ADAPTERS, storage_for

SLOW_AGING = 3600
"""priorityAgingSeconds long enough that waiting never matters within a test."""


@pytest.fixture(params=ADAPTERS)
async def farm(request: pytest.FixtureRequest) -> AsyncIterator[Farm]:
    async with storage_for(request.param, request) as storage:
        farm = Farm(storage)
        await farm.pool()
        yield farm


async def queue_of(farm: Farm, insight_id: str) -> InsightQueue:
    [queue] = await farm.storage.queue.insight_queues([insight_id])
    return queue


async def cursor(farm: Farm, insight_id: str) -> list[str]:
    return list((await queue_of(farm, insight_id)).pending_customers)


# --- FirstInFirstOut ---------------------------------------------------------------------------


async def test_first_in_first_out_dispatches_in_line_order_whoever_submitted(farm: Farm) -> None:
    await farm.insight("fifo")
    await farm.customers("A", "B")
    for label in ["a1", "b1", "a2", "b2"]:
        await farm.submit(label, label[0].upper(), "fifo")
    assert await farm.claim(3) == ["a1", "b1", "a2"]
    assert await farm.claim(3) == ["b2"]
    assert await farm.claim(3) == []


async def test_a_reclaimed_agenda_keeps_its_place_and_counts_a_reentry(farm: Farm) -> None:
    await farm.insight("fifo")
    await farm.customers("A")
    await farm.submit_many("A", "fifo", ["x", "y"])
    [before, _] = await farm.storage.queue.entries()
    assert await farm.claim(1) == ["x"]
    await farm.reclaim("x")
    [after, _] = await farm.storage.queue.entries()
    assert (after.agenda_id, after.status, after.reentries) == (before.agenda_id, "ready", 1)
    assert after.enqueued_position == before.enqueued_position
    assert after.enqueued_at == before.enqueued_at
    assert after.ready_since > before.ready_since
    assert await farm.claim(1) == ["x"]
    assert await farm.claim(1) == ["y"]


# --- RoundRobin -------------------------------------------------------------------------------


async def test_round_robin_gives_turns_across_customers_and_stores_the_cursor(farm: Farm) -> None:
    await farm.insight("rr", schedulingAlgorithm="RoundRobin")
    await farm.customers("A", "B", "C")
    await farm.submit_many("A", "rr", ["a1", "a2", "a3", "a4"])
    await farm.submit_many("B", "rr", ["b1", "b2"])
    await farm.submit_many("C", "rr", ["c1"])
    turns = [
        ("a1", ["B", "C"]),  # a new round: every customer of the pool, oldest first
        ("b1", ["C"]),
        ("c1", []),
        ("a2", ["B", "C"]),
        ("b2", ["C"]),
        ("a3", ["B", "C"]),  # C has nothing: pass 2 serves A; B and C stay owed a turn
        ("a4", ["B", "C"]),
    ]
    for label, pending in turns:
        assert (await farm.claim(1), await cursor(farm, "rr")) == ([label], pending)
    assert await farm.claim(1) == []
    assert await cursor(farm, "rr") == ["B", "C"]  # an empty queue leaves the cursor alone


async def test_a_round_robin_claim_larger_than_a_round_sweeps_again(farm: Farm) -> None:
    await farm.insight("rr", schedulingAlgorithm="RoundRobin")
    await farm.customers("A", "B", "C")
    await farm.submit_many("A", "rr", ["a1", "a2", "a3", "a4"])
    await farm.submit_many("B", "rr", ["b1", "b2"])
    await farm.submit_many("C", "rr", ["c1"])
    assert await farm.claim(5) == ["a1", "b1", "c1", "a2", "b2"]
    assert await cursor(farm, "rr") == ["C"]  # served in pass 1 only: keeps its turn (POP)
    assert await farm.claim(5) == ["a3", "a4"]
    assert await cursor(farm, "rr") == ["B", "C"]


async def test_a_customer_with_one_agenda_does_not_wait_for_one_with_many(farm: Farm) -> None:
    await farm.insight("rr", schedulingAlgorithm="RoundRobin")
    await farm.customers("big", "small")
    await farm.submit_many("big", "rr", [f"big{n}" for n in range(20)])
    await farm.submit("small1", "small", "rr")
    assert await farm.claim(1) + await farm.claim(1) == ["big0", "small1"]


# --- Priority ---------------------------------------------------------------------------------


async def test_priority_dispatches_higher_first_and_ties_in_line_order(farm: Farm) -> None:
    await farm.insight("prio", schedulingAlgorithm="Priority", priorityAgingSeconds=SLOW_AGING)
    await farm.customers("A")
    for label, priority in [("p0", 0), ("p5", 5), ("m3", -3), ("p5b", 5), ("p10", 10), ("p0b", 0)]:
        await farm.submit(label, "A", "prio", priority=priority)
    await farm.submit("none", "A", "prio")  # no priority: 0
    assert await farm.claim(4) == ["p10", "p5", "p5b", "p0"]
    assert await farm.claim(4) == ["p0b", "none", "m3"]


async def test_an_old_low_priority_agenda_overtakes_once_it_waited_long_enough(
    farm: Farm,
) -> None:
    """2 points of priority take 2 x 0.05 s of waiting to make up on ``fast``, 2 hours on
    ``slow``; the newer agendas are submitted 0.3 s after the older ones."""
    await farm.insight("fast", schedulingAlgorithm="Priority", priorityAgingSeconds=0.05)
    await farm.insight("slow", schedulingAlgorithm="Priority", priorityAgingSeconds=SLOW_AGING)
    await farm.customers("A")
    await farm.submit("old-fast", "A", "fast", priority=-1)
    await farm.submit("old-slow", "A", "slow", priority=-1)
    await anyio.sleep(0.3)
    await farm.submit("new-fast", "A", "fast", priority=1)
    await farm.submit("new-slow", "A", "slow", priority=1)
    assert await farm.claim(1, insights=["fast"]) == ["old-fast"]
    assert await farm.claim(1, insights=["slow"]) == ["new-slow"]


async def test_a_retry_boost_moves_a_reclaimed_agenda_up(farm: Farm) -> None:
    await farm.insight(
        "boosted", schedulingAlgorithm="Priority", priorityAgingSeconds=SLOW_AGING, retryBoost=5
    )
    await farm.insight("plain", schedulingAlgorithm="Priority", priorityAgingSeconds=SLOW_AGING)
    await farm.customers("A")
    for lane in ["boosted", "plain"]:
        await farm.submit(f"retried-{lane}", "A", lane)
        assert await farm.claim(1, insights=[lane]) == [f"retried-{lane}"]
        await farm.submit(f"urgent-{lane}", "A", lane, priority=3)
        await farm.reclaim(f"retried-{lane}")
    assert await farm.claim(1, insights=["boosted"]) == ["retried-boosted"]  # 0 + 5 > 3
    assert await farm.claim(1, insights=["plain"]) == ["urgent-plain"]


async def test_changing_params_priority_reranks_a_waiting_agenda(farm: Farm) -> None:
    await farm.insight("prio", schedulingAlgorithm="Priority", priorityAgingSeconds=SLOW_AGING)
    await farm.customers("A")
    await farm.submit("u1", "A", "prio")
    await farm.submit("u2", "A", "prio")
    await farm.submit("u3", "A", "prio", priority=2)
    await farm.update_params("u2", {"lane": "prio", "priority": 5})
    await farm.update_params("u3", {"lane": "prio"})  # params are replaced whole: back to 0
    assert await farm.claim(1) == ["u2"]
    assert await farm.claim(2) == ["u1", "u3"]


async def test_an_invalid_priority_change_is_refused(farm: Farm) -> None:
    await farm.insight("prio", schedulingAlgorithm="Priority")
    await farm.customers("A")
    await farm.submit("u1", "A", "prio", priority=1)
    with pytest.raises(InvalidRequest, match=r"params\.priority"):
        await farm.update_params("u1", {"priority": 11})
    [entry] = await farm.storage.queue.entries()
    assert entry.priority == 1


# --- queueSize ----------------------------------------------------------------------------------


async def test_queue_size_bounds_what_is_leased_and_frees_up_when_agendas_leave(
    farm: Farm,
) -> None:
    await farm.insight("bounded", queueSize=2)
    await farm.customers("A")
    await farm.submit_many("A", "bounded", ["q1", "q2", "q3", "q4"])
    assert await farm.claim(10) == ["q1", "q2"]
    assert await farm.claim(10) == []
    await farm.start("q1")
    assert await farm.claim(10, worker="w2") == []  # running counts as leased
    await farm.complete("q1")
    assert await farm.claim(10) == ["q3"]
    await farm.reclaim("q2")
    assert await farm.claim(10) == ["q2"]  # back, at its old place, into the free room
    assert await farm.claim(10) == []


async def test_an_insight_at_its_queue_size_does_not_hold_back_the_others(farm: Farm) -> None:
    await farm.insight("bounded", queueSize=1)
    await farm.insight("open")
    await farm.customers("A")
    await farm.submit_many("A", "bounded", ["b1", "b2", "b3"])
    await farm.submit_many("A", "open", ["o1", "o2"])
    assert await farm.claim(4) == ["b1", "o1", "o2"]
    assert await farm.claim(4) == []


# --- scope and sharing --------------------------------------------------------------------------


async def test_claims_are_scoped_by_insight_and_by_resource_pool(farm: Farm) -> None:
    await farm.pool("other")
    await farm.insight("here")
    await farm.insight("there", pool="other")
    await farm.customers("A")
    await farm.customers("Z", pool="other")
    await farm.submit("h1", "A", "here")
    await farm.submit("t1", "Z", "there")
    await farm.submit("h2", "A", "here")
    await farm.submit("t2", "Z", "there")
    assert await farm.claim(1, insights=["there"]) == ["t1"]
    assert await farm.claim(1, resource_pool="pool") == ["h1"]
    assert await farm.claim(5, insights=["there"], resource_pool="pool") == []
    assert await farm.claim(5, insights=["nobody-serves-this"]) == []
    assert await farm.claim(5, resource_pool="no-such-pool") == []
    assert await farm.claim(5) == ["h2", "t2"]


async def test_a_claim_is_shared_among_insights_the_oldest_first(farm: Farm) -> None:
    await farm.insight("busy")
    await farm.insight("quiet")
    await farm.customers("A")
    await farm.submit_many("A", "busy", [f"b{n}" for n in range(1, 7)])
    await farm.submit_many("A", "quiet", ["q1", "q2", "q3"])
    assert await farm.claim(5) == ["b1", "b2", "b3", "q1", "q2"]  # 3 + 2, not 5 + 0
    assert await farm.claim(5) == ["b4", "b5", "b6", "q3"]


# --- watching the queues ------------------------------------------------------------------------


async def test_insight_queues_count_and_age_each_queue(farm: Farm) -> None:
    await farm.insight("watched")
    await farm.insight("idle")
    await farm.customers("A")
    await farm.submit_many("A", "watched", ["w1", "w2", "w3", "w4"])
    assert await farm.claim(2) == ["w1", "w2"]
    await farm.start("w1")
    await anyio.sleep(0.01)
    idle, watched = await farm.storage.queue.insight_queues(["idle", "watched"])
    waiting = [e for e in await farm.storage.queue.entries() if e.status == "ready"]
    assert (watched.insight_id, watched.resource_pool_id) == ("watched", "pool")
    assert (watched.ready, watched.dispatched, watched.running) == (2, 1, 1)
    assert watched.oldest_ready_since == min(e.ready_since for e in waiting)
    assert watched.oldest_wait_seconds > 0
    assert idle == InsightQueue(insight_id="idle")  # named: listed with zeros
    assert idle.oldest_wait_seconds == 0
    assert [q.insight_id for q in await farm.storage.queue.insight_queues()] == ["watched"]

    assert await farm.claim(5) == ["w3", "w4"]
    [drained] = await farm.storage.queue.insight_queues(["watched"])
    assert (drained.ready, drained.dispatched, drained.running) == (0, 3, 1)
    assert (drained.oldest_ready_since, drained.oldest_wait_seconds) == (None, 0)


async def test_insight_queues_are_listed_by_insight_id(farm: Farm) -> None:
    await farm.insight("zeta")
    await farm.insight("alpha")
    await farm.customers("A")
    await farm.submit("z1", "A", "zeta")
    await farm.submit("a1", "A", "alpha")
    named = await farm.storage.queue.insight_queues(["zeta", "alpha", "beta"])
    assert [q.insight_id for q in named] == ["alpha", "beta", "zeta"]
    assert [q.insight_id for q in await farm.storage.queue.insight_queues()] == ["alpha", "zeta"]


# --- the queue monitor: case 51 ------------------------------------------------------------------


async def test_without_insights_with_work_nothing_is_read_or_claimed(farm: Farm) -> None:
    await farm.insight("rr", schedulingAlgorithm="RoundRobin")
    await farm.insight("other")
    await farm.customers("A", "B")
    assert await farm.claim(5) == []
    await farm.submit("o1", "A", "other")
    assert await farm.claim(5, insights=["rr"]) == []
    assert await cursor(farm, "rr") == []  # no round was started
    [waiting] = await farm.storage.queue.entries()
    assert (waiting.status, farm.labels[waiting.agenda_id]) == ("ready", "o1")


async def test_a_queue_size_of_one_with_nothing_leased_dispatches_exactly_one(
    farm: Farm,
) -> None:
    await farm.insight("single", queueSize=1)
    await farm.customers("A")
    await farm.submit_many("A", "single", ["s1", "s2", "s3"])
    assert await farm.claim(5) == ["s1"]
    assert await farm.claim(5) == []  # leased >= queueSize: nothing


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"schedulingAlgorithm": None},
        {"schedulingAlgorithm": "Fairness", "queueSize": "2", "priorityAgingSeconds": 0},
        {"schedulingAlgorithm": 7, "queueSize": -1, "retryBoost": "lots"},
    ],
)
async def test_a_missing_or_invalid_algorithm_is_first_in_first_out(
    farm: Farm, fields: dict[str, Any]
) -> None:
    await farm.raw_insight("odd", **fields)
    await farm.customers("A", "B")
    for label, customer, priority in [("x1", "A", -5), ("x2", "A", 0), ("x3", "B", 9)]:
        await farm.submit(label, customer, "odd", priority=priority)
    assert await farm.claim(5) == ["x1", "x2", "x3"]  # unbounded too


# --- both adapters alike ------------------------------------------------------------------------


async def busy_day(farm: Farm) -> list[list[str]]:
    """A mixed scenario: three insights of three algorithms, one of them bounded,
    submissions between claims of various sizes, a reclaim and completions."""
    await farm.pool()
    await farm.insight("rr", schedulingAlgorithm="RoundRobin")
    await farm.insight(
        "prio", schedulingAlgorithm="Priority", priorityAgingSeconds=SLOW_AGING, retryBoost=3
    )
    await farm.insight("fifo", queueSize=2)
    await farm.customers("A", "B", "C")
    await farm.submit_many("A", "rr", ["ra1", "ra2", "ra3"])
    await farm.submit_many("B", "rr", ["rb1"])
    await farm.submit_many("C", "fifo", ["f1", "f2", "f3"])
    for label, priority in [("p1", 1), ("p2", 4), ("p3", -2), ("p4", 4)]:
        await farm.submit(label, "B", "prio", priority=priority)
    claims = [await farm.claim(4), await farm.claim(3)]
    await farm.submit_many("C", "rr", ["rc1", "rc2"])
    await farm.reclaim("rb1")
    await farm.complete("ra1")
    claims += [await farm.claim(2), await farm.claim(5), await farm.claim(1)]
    await farm.complete("f1")
    claims += [await farm.claim(5, insights=["prio"]), await farm.claim(9)]
    return [*claims, await farm.dispatch_order()]


BUSY_DAY_CLAIMS = [
    ["ra1", "rb1", "f1", "p2"],  # shared 2 + 1 + 1, the oldest insight first
    ["ra2", "f2", "p4"],  # the round goes on with C, who has nothing: pass 2 serves A
    ["rb1", "p1"],  # fifo is at its queueSize; B's reclaimed agenda is B's turn
    ["rc1", "ra3", "rc2", "p3"],  # C is owed a turn, then a sweep over everyone
    [],  # fifo is still full
    [],
    ["f3"],
]


async def test_both_queues_dispatch_the_same_agendas_in_the_same_order(
    request: pytest.FixtureRequest,
) -> None:
    for adapter in ADAPTERS:
        async with storage_for(adapter, request) as storage:
            *claims, order = await busy_day(Farm(storage))
        assert (adapter, claims) == (adapter, BUSY_DAY_CLAIMS)
        assert order == [label for claim in BUSY_DAY_CLAIMS for label in claim]


# --- PostgreSQL: concurrent claimers ------------------------------------------------------------


@pytest.fixture
async def postgres_farm(request: pytest.FixtureRequest) -> AsyncIterator[Farm]:
    async with storage_for("postgres", request) as storage:
        farm = Farm(storage)
        await farm.pool()
        yield farm


async def test_concurrent_claimers_never_lease_more_than_the_queue_size(
    postgres_farm: Farm,
) -> None:
    farm = postgres_farm
    await farm.insight("bounded", queueSize=2)
    await farm.customers("A")
    labels = [f"q{n:02}" for n in range(16)]
    await farm.submit_many("A", "bounded", labels)
    holding: set[str] = set()
    """Claimed and not yet being completed: every one of them is leased."""
    done: list[str] = []
    most_held = 0

    async def claimer(name: str) -> None:
        nonlocal most_held
        while len(done) < len(labels):
            claimed = await farm.claim(2, worker=name, insights=["bounded"])
            holding.update(claimed)
            most_held = max(most_held, len(holding))
            leased = [e for e in await farm.storage.queue.entries() if e.status != "ready"]
            assert len(leased) <= 2
            for label in claimed:
                await anyio.sleep(0.002)
                holding.discard(label)
                await farm.complete(label)
                done.append(label)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(claimer, f"w{n}")
    assert sorted(done) == labels
    assert most_held == 2


async def test_concurrent_round_robin_claims_take_the_turns_of_serial_ones(
    postgres_farm: Farm,
) -> None:
    """Claims on a RoundRobin insight take turns, so however they interleave, the log's
    dispatches are the claims one after the other, each the algorithm's pick after the
    ones before it."""
    farm = postgres_farm
    await farm.insight("rr", schedulingAlgorithm="RoundRobin")
    customers = ["A", "B", "C", "D"]
    await farm.customers(*customers)
    counts = {"A": 7, "B": 3, "C": 5, "D": 2}
    backlog = {c: [f"{c}{n}" for n in range(count)] for c, count in counts.items()}
    for n in range(7):
        for items in backlog.values():
            if n < len(items):
                await farm.submit(items[n], items[n][0], "rr")
    batches: list[list[str]] = []

    async def claimer(sizes: list[int], name: str) -> None:
        claims = [await farm.claim(size, worker=name) for size in sizes * 10]
        batches.extend(claimed for claimed in claims if claimed)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n, sizes in enumerate([[1, 2], [3], [2, 1, 1], [4, 1]]):
                tg.start_soon(claimer, sizes, f"w{n}")

    order = await farm.dispatch_order()
    assert sorted(order) == sorted(label for items in backlog.values() for label in items)
    by_first = {batch[0]: batch for batch in batches}
    pending: list[str] = []
    left = {c: [(c, label) for label in items] for c, items in backlog.items()}
    position = 0
    while position < len(order):
        batch = by_first[order[position]]
        assert order[position : position + len(batch)] == batch  # a claim's dispatches are adjacent
        pick = round_robin(pending, lambda: customers, left, len(batch))
        assert [label for _, label in pick.selected] == batch
        for customer, _ in pick.selected:
            left[customer].pop(0)
        pending = pick.pending
        position += len(batch)
    assert await cursor(farm, "rr") == pending


async def test_a_round_robin_claim_that_waited_for_its_turn_plans_with_what_is_left(
    postgres_farm: Farm,
) -> None:
    """A claim that had to wait for another one on the same RoundRobin insight must pick
    from what is ready once its turn comes, as if it had come later: then the cursor stays
    what serial claims make it (here B is owed the next turn), and B is served next."""
    farm = postgres_farm
    await farm.insight("rr", schedulingAlgorithm="RoundRobin")
    await farm.customers("A", "B")
    await farm.submit("a1", "A", "rr")
    await farm.submit("b1", "B", "rr")
    pool = farm.storage.pool
    assert pool is not None
    claimed: list[str] = []

    async def waiting_claim() -> None:
        claimed.extend(await farm.claim(5))

    async with pool.acquire() as other_claim:
        turn = other_claim.transaction()
        await turn.start()
        await other_claim.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", INSIGHT_LOCK_CLASS, "rr"
        )
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiting_claim)
                await until_a_claim_waits(farm)
                assert await farm.service.delete(farm.ids["b1"], now_ms=0)  # b1 leaves
                await turn.commit()  # the other claim ends: the waiting one goes on
    assert claimed == ["a1"]
    assert await cursor(farm, "rr") == ["B"]  # as a claim of a1 alone leaves it
    await farm.submit("a2", "A", "rr")
    await farm.submit("b2", "B", "rr")
    assert await farm.claim(1) == ["b2"]


async def until_a_claim_waits(farm: Farm) -> None:
    """Until a claim waits for the turn of an insight (its advisory lock)."""
    pool = farm.storage.pool
    assert pool is not None
    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = $1::int"
    )
    while not await pool.fetchval(waiting, INSIGHT_LOCK_CLASS):
        await anyio.sleep(0.01)
