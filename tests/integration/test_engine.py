"""The whole engine on PostgreSQL: runs, idempotent and invalid submissions, several workers
on one database, time travel, read-your-writes, and a projection rebuild that reproduces the
live rows exactly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from popflow.bootstrap import Engine, open_engine, rebuild_projections
from popflow.engine.decide import Command, Reclaim, Start, StartOperation, decide
from popflow.engine.routing import CustomerNotFound
from popflow.engine.service import IdempotencyConflict
from popflow.engine.state import evolve
from popflow.engine.worker import WorkerSettings
from popflow.errors import InvalidAgenda
from popflow.events.store import AppendRequest
from popflow.events.vocabulary import (
    AgendaDispatched,
    AgendaInsight,
    OperationStarted,
    agenda_stream,
)
from popflow.settings import Settings
from tests.support.scheduling import Farm

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def settings(dsn: str, **worker: Any) -> Settings:
    return Settings(
        dsn=dsn,
        poll_interval=0.1,
        worker=WorkerSettings(poll_interval=0.1, heartbeat_interval=0.2, **worker),
    )


def quick(name: str = "a", n: int = 3) -> dict[str, Any]:
    return {
        "customerId": "acme",
        "linkId": name,
        "operations": [
            {"name": f"{name}{i}", "type": "sample", "payload": {"resultPayload": {"i": i}}}
            for i in range(n)
        ],
    }


async def count_events(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM popflow.events"))
    finally:
        await conn.close()


async def test_examples_run_to_their_expected_end(database_dsn: str) -> None:
    expected = {
        "sample": "succeeded",
        "dag": "succeeded",
        "generator": "succeeded",
        "failing": "failed",
    }
    async with open_engine(settings(database_dsn)) as engine:
        for name, outcome in expected.items():
            text = (EXAMPLES / f"{name}.json").read_text()
            slim = json.loads(text.replace('"sleepMilliseconds"', '"ignoredSleep"'))
            progress = await engine.run(slim, timeout=20)
            assert progress.processing_state == "COMPLETE"
            assert progress.processing_state_message == outcome, name


async def test_an_idempotent_retry_returns_the_first_submission(database_dsn: str) -> None:
    async with open_engine(settings(database_dsn), claim=False) as engine:
        first = await engine.submit(quick(), idempotency_key="order-7")
        again = await engine.submit(quick(), idempotency_key="order-7")
        assert (again.agenda_id, again.progress_id, again.created) == (
            first.agenda_id,
            first.progress_id,
            False,
        )
        with pytest.raises(IdempotencyConflict):
            await engine.submit(quick("other"), idempotency_key="order-7")
        other_customer = await engine.submit(
            {**quick(), "customerId": "globex"}, idempotency_key="order-7"
        )
        assert other_customer.agenda_id != first.agenda_id
    assert await count_events(database_dsn) == 2


async def test_an_invalid_agenda_leaves_nothing_behind(database_dsn: str) -> None:
    async with open_engine(settings(database_dsn), claim=False) as engine:
        with pytest.raises(InvalidAgenda) as caught:
            await engine.submit(
                {
                    "customerId": "",
                    "operations": [
                        {"name": "a", "type": "nope", "payload": "@<b.out>"},
                        {"name": "b", "type": "sample", "payload": "@<a.out>"},
                    ],
                }
            )
    problems = " | ".join(caught.value.problems)
    assert "customerId" in problems
    assert "unknown type [nope]" in problems
    assert await count_events(database_dsn) == 0


async def test_read_your_writes_and_time_travel(database_dsn: str) -> None:
    async with open_engine(settings(database_dsn), claim=False) as engine:
        submission = await engine.submit(quick())
        progress = await engine.progress(submission.agenda_id, at_least=submission.position)
        assert progress.processing_state == "WAITING"
        assert [o.operation for o in progress.operation_progress or []] == ["a0", "a1", "a2"]
        done = await engine.run(quick("b"), timeout=10)
        at_start = await engine.progress_at(done.agenda_id, 1)
        assert at_start.processing_state == "WAITING"
        middle = await engine.state_at(done.agenda_id, 4)
        assert middle.status.value == "running"
        assert (await engine.state_at(done.agenda_id)).status.value == "succeeded"


async def test_several_workers_share_the_queue_and_never_run_an_agenda_twice(
    database_dsn: str,
) -> None:
    agendas = 40
    # Two agendas at a time each, so that neither worker can take everything.
    async with (
        open_engine(settings(database_dsn, claim_batch=2, max_agendas=2)) as first,
        open_engine(settings(database_dsn, claim_batch=2, max_agendas=2)) as second,
    ):
        submissions = [await first.submit(quick(f"j{n}-")) for n in range(agendas)]
        for submission in submissions:
            assert (
                await first.wait(submission.agenda_id, timeout=30)
            ).processing_state_message == "succeeded"
        histories = [await first.history(s.agenda_id) for s in submissions]
        workers = {first.worker.worker_id, second.worker.worker_id}
    dispatches: Counter[str] = Counter()
    for history in histories:
        dispatched = [e.event for e in history if isinstance(e.event, AgendaDispatched)]
        assert len(dispatched) == 1
        dispatches[dispatched[0].worker_id] += 1
        started = Counter(
            e.event.operation for e in history if isinstance(e.event, OperationStarted)
        )
        assert set(started.values()) == {1}
    assert sum(dispatches.values()) == agendas
    assert set(dispatches) == workers, f"both workers should have taken work: {dispatches}"


async def dump(dsn: str) -> tuple[list[Any], list[Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        agendas = await conn.fetch("SELECT * FROM popflow.agenda_progress ORDER BY id")
        operations = await conn.fetch("SELECT * FROM popflow.operation_progress ORDER BY id")
        return [dict(r) for r in agendas], [dict(r) for r in operations]
    finally:
        await conn.close()


async def test_a_rebuild_reproduces_the_live_rows_exactly(database_dsn: str) -> None:
    async with open_engine(settings(database_dsn)) as engine:
        await _varied_history(engine)
        await engine.projection.wait_for(await engine.storage.events.head())
    live = await dump(database_dsn)
    assert len(live[0]) == 6
    assert await rebuild_projections(settings(database_dsn)) > 0
    assert await dump(database_dsn) == live


async def _varied_history(engine: Engine) -> None:
    for name in ("sample", "generator", "failing"):
        text = (
            (EXAMPLES / f"{name}.json").read_text().replace('"sleepMilliseconds"', '"ignoredSleep"')
        )
        await engine.run(text, timeout=20)
    await engine.submit({**quick(), "params": {"doNotRun": True}})
    await _interrupted(engine)
    waiting = await engine.submit(quick("w"))
    await engine.wait(waiting.agenda_id, timeout=10)


async def _interrupted(engine: Engine) -> None:
    """An agenda whose (imaginary) worker was reclaimed mid-operation, never resumed."""
    submission = await engine.agendas.submit(engine.parse(quick("r")), dispatch_to="gone")
    state = await engine.state_at(submission.agenda_id)
    commands: list[Command] = [Start(1), StartOperation("r0", 1), Reclaim(1, "worker gone")]
    events = []
    for command in commands:
        new = decide(state, command, now_ms=0)
        for event in new:
            state = evolve(state, event)
        events += new
    stream = agenda_stream(submission.agenda_id)
    await engine.storage.events.append([AppendRequest(stream, submission_version(), events)])


def submission_version() -> int:
    return 2  # agenda.submitted and agenda.dispatched


async def test_the_engine_reports_its_queues(database_dsn: str) -> None:
    async with open_engine(settings(database_dsn), claim=False, reclaim=False) as engine:
        assert await engine.queues() == []
        await engine.submit(quick())
        await engine.submit(quick())
        [default] = await engine.queues()
        [named] = await engine.queues(["default"])
        [empty] = await engine.queues(["nobody-serves-this"])
    assert named.oldest_wait_seconds >= default.oldest_wait_seconds  # time went on
    assert msgspec.structs.replace(named, oldest_wait_seconds=0) == msgspec.structs.replace(
        default, oldest_wait_seconds=0
    )
    assert (default.insight_id, default.resource_pool_id, default.ready) == (
        "default",
        "default",
        2,
    )
    assert default.oldest_ready_since is not None
    assert default.oldest_wait_seconds >= 0
    assert (empty.ready, empty.resource_pool_id, empty.oldest_ready_since) == (0, None, None)


async def test_the_engine_routes_submissions_once_customers_exist(database_dsn: str) -> None:
    async with open_engine(settings(database_dsn), claim=False, reclaim=False) as engine:
        before = await engine.submit(agenda_of("anyone"))  # no customer yet: the default
        farm = Farm(engine.storage)
        await farm.pool("farm")
        await farm.insight("gpu", pool="farm")
        await farm.customers("acme", pool="farm")
        routed = await engine.submit(agenda_of("acme", lane="gpu"))
        with pytest.raises(CustomerNotFound, match="Customer not found for customerId anyone"):
            await engine.submit(agenda_of("anyone"))
        bound = {
            s.agenda_id: (await engine.state_at(s.agenda_id)).insight for s in (before, routed)
        }
    assert bound[before.agenda_id] == AgendaInsight(
        resource_pool_id="default", insight_id="default"
    )
    assert bound[routed.agenda_id] == AgendaInsight(resource_pool_id="farm", insight_id="gpu")


def agenda_of(customer: str, **params: Any) -> dict[str, Any]:
    return {
        "customerId": customer,
        "params": params,
        "operations": [{"name": "a", "type": "sample", "payload": {}}],
    }
