"""The Statistics contract, run against the memory and PostgreSQL adapters.

Agendas are counted by state from the queue, the progress rows and (for the few that
neither settles) their ending events; queues are counted by insight and status.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from popflow.engine.decide import submitted
from popflow.engine.memory_queue import MemoryWorkQueue
from popflow.engine.state import AgendaStatus
from popflow.events.memory import MemoryEventStore
from popflow.events.postgres import PostgresEventStore
from popflow.events.store import AppendRequest, EventStore
from popflow.events.vocabulary import (
    AgendaDeleted,
    AgendaDispatched,
    AgendaFailed,
    AgendaInsight,
    AgendaReclaimed,
    AgendaStarted,
    AgendaSucceeded,
    Event,
    agenda_stream,
)
from popflow.projections.memory import MemoryProgressStore
from popflow.projections.postgres import PostgresProgressStore
from popflow.projections.postgres_statistics import PostgresStatistics
from popflow.projections.runner import ProjectionRunner
from popflow.projections.statistics import AGENDA_STATES, MemoryStatistics, Statistics
from tests.conftest import fresh_pool
from tests.support.agendas import agenda, op
from tests.support.stores import ADAPTERS


@dataclasses.dataclass
class Subject:
    events: EventStore
    projection: ProjectionRunner
    statistics: Statistics

    async def record(self, agenda_id: str, *events: Event) -> None:
        """Append ``events`` to the agenda's stream, after what it holds already."""
        stream = agenda_stream(agenda_id)
        version = len(await self.events.read_stream(stream))
        await self.events.append([AppendRequest(stream, version, list(events))])


@pytest.fixture(params=ADAPTERS)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "memory":
        events = MemoryEventStore()
        queue, progress = MemoryWorkQueue(events), MemoryProgressStore()
        yield Subject(
            events, ProjectionRunner(events, progress), MemoryStatistics(queue, progress, events)
        )
        return
    async with fresh_pool(request.getfixturevalue("postgres_template")) as pool:
        store = PostgresEventStore(pool)  # its trigger keeps the queue table
        yield Subject(
            store, ProjectionRunner(store, PostgresProgressStore(pool)), PostgresStatistics(pool)
        )


def submission(agenda_id: str, *, insight: str = "fast", held: bool = False) -> Event:
    spec = agenda(op("a"), doNotRun=True) if held else agenda(op("a"))
    return submitted(
        spec,
        agenda_id=agenda_id,
        progress_id=f"p-{agenda_id}",
        insight=AgendaInsight(resource_pool_id="pool", insight_id=insight),
    )


CLAIMED = (AgendaDispatched(worker_id="w", dispatch=1),)
STARTED = (*CLAIMED, AgendaStarted(worker_id="w", dispatch=1))


def expected(**counts: int) -> dict[str, int]:
    return {state: counts.get(state, 0) for state in AGENDA_STATES}


def test_the_states_are_those_of_the_agenda_lifecycle() -> None:
    assert set(AGENDA_STATES) == {status.value for status in AgendaStatus}


async def test_nothing_recorded_counts_zero_everywhere(subject: Subject) -> None:
    assert await subject.statistics.agendas_by_state() == expected()
    assert await subject.statistics.queue_depth() == {}


async def test_agendas_are_counted_by_their_latest_state(subject: Subject) -> None:
    await subject.record("ready", submission("ready"))
    await subject.record("dispatched", submission("dispatched"), *CLAIMED)
    await subject.record("running", submission("running"), *STARTED)
    await subject.record("done", submission("done"), *STARTED, AgendaSucceeded(dispatch=1))
    await subject.record("broken", submission("broken"), *STARTED, AgendaFailed(dispatch=1))
    await subject.record("parked", submission("parked", held=True))
    await subject.projection.catch_up()
    assert await subject.statistics.agendas_by_state() == expected(
        ready=1, dispatched=1, running=1, succeeded=1, failed=1, held=1
    )


async def test_a_reclaimed_agenda_is_ready_again(subject: Subject) -> None:
    reclaimed = AgendaReclaimed(worker_id="w", dispatch=1, reason="heartbeat lost")
    await subject.record("again", submission("again"), *STARTED, reclaimed)
    await subject.projection.catch_up()
    assert await subject.statistics.agendas_by_state() == expected(ready=1)


async def test_deleted_before_running_counts_as_deleted_after_completion_as_its_outcome(
    subject: Subject,
) -> None:
    await subject.record("dropped", submission("dropped"), AgendaDeleted(time=5))
    await subject.record("unheld", submission("unheld", held=True), AgendaDeleted(time=5))
    finished = (*STARTED, AgendaSucceeded(dispatch=1), AgendaDeleted(time=5))
    await subject.record("finished", submission("finished"), *finished)
    await subject.projection.catch_up()
    assert await subject.statistics.agendas_by_state() == expected(deleted=2, succeeded=1)


async def test_an_ending_the_progress_has_not_seen_yet_still_counts(subject: Subject) -> None:
    await subject.record("quick", submission("quick"), *STARTED)
    await subject.record("bad", submission("bad"), *STARTED)
    await subject.projection.catch_up()
    await subject.record("quick", AgendaSucceeded(dispatch=1))
    await subject.record("bad", AgendaFailed(dispatch=1))
    assert await subject.statistics.agendas_by_state() == expected(succeeded=1, failed=1)


async def test_a_queued_agenda_counts_before_its_progress_is_projected(subject: Subject) -> None:
    await subject.record("early", submission("early"))
    assert await subject.statistics.agendas_by_state() == expected(ready=1)


async def test_queue_depth_counts_queued_agendas_by_insight_and_status(subject: Subject) -> None:
    for n in range(3):
        await subject.record(f"f{n}", submission(f"f{n}"))
    await subject.record("f-claimed", submission("f-claimed"), *CLAIMED)
    await subject.record("s-running", submission("s-running", insight="slow"), *STARTED)
    await subject.record("s-done", submission("s-done", insight="slow"), *STARTED)
    await subject.record("s-done", AgendaSucceeded(dispatch=1))
    await subject.record("s-held", submission("s-held", insight="slow", held=True))
    assert await subject.statistics.queue_depth() == {
        ("fast", "ready"): 3,
        ("fast", "dispatched"): 1,
        ("slow", "running"): 1,
    }
