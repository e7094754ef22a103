"""Projection rebuild speed over a large, realistic event log.

Each measurement builds a log of at least :data:`EVENTS` events (:data:`QUICK_EVENTS`
with ``--quick``) in a fresh database, untimed: agendas of :data:`OPERATIONS` independent
``sample`` operations, each with the history the engine records for one that succeeds
(submitted, dispatched, started, an ``operation.started`` per operation, an
``operation.succeeded`` per operation, succeeded: 24 events). The events go through the
event store itself, many streams per append, so the log, the streams and the inline
projections (work queue, documents) are exactly what appends produce. As in a busy engine,
the histories interleave: each append carries the beginnings (submitted, dispatched,
started) of one group of agendas, the operations' starts of the group before, and the
endings of the group before that; the log stops there, so the last two groups are still in
flight, as in a running system. The database is then vacuumed and analysed, as autovacuum
would have left a log of that age.

The clock then runs around :func:`popflow.bootstrap.rebuild_projections`, which rebuilds
the work queue, the documents and the progress rows from the whole log (with
``synchronous_commit=on``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import asyncpg

from bench.scenario import Context, Figures, Scenario
from bench.server import BenchError, fresh_database, with_server_settings
from popflow.bootstrap import open_storage, rebuild_projections
from popflow.engine.decide import submitted
from popflow.engine.router import DEFAULT_INSIGHT
from popflow.events.store import AppendRequest, Conflict, EventStore
from popflow.events.vocabulary import (
    Agenda,
    AgendaDispatched,
    AgendaStarted,
    AgendaSucceeded,
    Event,
    Operation,
    OperationStarted,
    OperationSucceeded,
    agenda_stream,
)
from popflow.settings import Settings

EVENTS = 1_000_000
QUICK_EVENTS = 20_000
OPERATIONS = 10
GROUP = 200
"""Agendas per group: an append carries three groups' events (4,800 events)."""
WORKER_ID = "bench-worker"
_IDS = uuid.UUID("6c1f0f43-5b9e-4c55-9a43-2f3f4d1e8a70")
"""Agenda ids are name-based UUIDs in this namespace: random-looking, as the engine's."""

RATE_FIGURE = "projection rebuild: events/s"
SECONDS_FIGURE = "projection rebuild: seconds"

_OPERATION_NAMES = tuple(f"op-{number}" for number in range(1, OPERATIONS + 1))
_AGENDA = Agenda(
    customer_id="bench",
    operations=[Operation(name=name, type="sample", payload={}) for name in _OPERATION_NAMES],
)
_BEGUN: tuple[Event, ...] = (
    AgendaDispatched(worker_id=WORKER_ID, dispatch=1),
    AgendaStarted(worker_id=WORKER_ID, dispatch=1),
)
_RUNNING: tuple[Event, ...] = tuple(
    OperationStarted(operation=name, attempt=1, dispatch=1) for name in _OPERATION_NAMES
)
_ENDED: tuple[Event, ...] = (
    *(OperationSucceeded(operation=name, attempt=1, result={}) for name in _OPERATION_NAMES),
    AgendaSucceeded(dispatch=1),
)
EVENTS_PER_AGENDA = 1 + len(_BEGUN) + len(_RUNNING) + len(_ENDED)
_IN_FLIGHT_SHORTFALL = 2 * len(_ENDED) + len(_RUNNING)
"""Events per agenda the two groups still in flight lack, together."""


def _begin(agenda_id: str) -> AppendRequest:
    """The submission of an agenda (as the engine gives it: its id as correlation id)
    with its dispatch and start."""
    agenda = Agenda(customer_id=_AGENDA.customer_id, operations=_AGENDA.operations, cid=agenda_id)
    first = submitted(
        agenda, agenda_id=agenda_id, progress_id=str(uuid.uuid4()), insight=DEFAULT_INSIGHT
    )
    return AppendRequest(agenda_stream(agenda_id), 0, [first, *_BEGUN])


def _run(agenda_id: str) -> AppendRequest:
    return AppendRequest(agenda_stream(agenda_id), 1 + len(_BEGUN), _RUNNING)


def _end(agenda_id: str) -> AppendRequest:
    return AppendRequest(agenda_stream(agenda_id), 1 + len(_BEGUN) + len(_RUNNING), _ENDED)


def groups_for(events: int) -> int:
    """How many groups of agendas make a log of at least ``events`` events."""
    return max(3, _ceil_div(_ceil_div(events, GROUP) + _IN_FLIGHT_SHORTFALL, EVENTS_PER_AGENDA))


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def log_events(groups: int) -> int:
    """The events of a log of ``groups`` groups, the last two still in flight."""
    return GROUP * (EVENTS_PER_AGENDA * groups - _IN_FLIGHT_SHORTFALL)


async def build_log(events: EventStore, groups: int, context: Context) -> None:
    """Append the histories of ``groups`` groups of agendas, interleaved group by group;
    the last group is left started, the one before it running its operations."""
    for step in range(groups):
        requests = [
            *(_begin(a) for a in _group(step, groups)),
            *(_run(a) for a in _group(step - 1, groups)),
            *(_end(a) for a in _group(step - 2, groups)),
        ]
        await _append(events, requests)
        if (10 * (step + 1)) // groups > (10 * step) // groups:
            context.say(f"rebuild: log {100 * (step + 1) // groups} % built")


def _group(index: int, groups: int) -> list[str]:
    """The agenda ids of group ``index`` (none outside ``0 .. groups - 1``)."""
    if not 0 <= index < groups:
        return []
    first = index * GROUP
    return [str(uuid.uuid5(_IDS, str(first + number))) for number in range(GROUP)]


async def _append(events: EventStore, requests: Sequence[AppendRequest]) -> None:
    for result in await events.append(requests):
        if isinstance(result, Conflict):
            raise BenchError(f"building the log: {result.stream_id} conflicted")


async def _prepare_log(database: str, groups: int, context: Context) -> None:
    # Not timed: asynchronous commits are enough to build the log.
    settings = Settings(dsn=with_server_settings(database, synchronous_commit="off"))
    async with open_storage(settings) as storage:
        await build_log(storage.events, groups, context)
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


async def _logged_events(database: str) -> int:
    conn = await asyncpg.connect(database)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM popflow.events"))
    finally:
        await conn.close()


async def _measure(context: Context) -> Figures:
    groups = groups_for(QUICK_EVENTS if context.quick else EVENTS)
    async with fresh_database(context.dsn) as database:
        context.say(f"rebuild: building a log of {log_events(groups):,} events")
        await _prepare_log(database, groups, context)
        logged = await _logged_events(database)
        if logged != log_events(groups):
            raise BenchError(f"the log holds {logged} events, not {log_events(groups)}")
        context.say(f"rebuild: rebuilding the projections from {logged:,} events")
        settings = Settings(dsn=with_server_settings(database, synchronous_commit="on"))
        started = time.perf_counter()
        replayed = await rebuild_projections(settings)
        seconds = time.perf_counter() - started
    if replayed != logged:
        raise BenchError(f"the rebuild replayed {replayed} events of the {logged} in the log")
    return {RATE_FIGURE: logged / seconds, SECONDS_FIGURE: seconds}


_FULL_GROUPS = groups_for(EVENTS)
_QUICK_GROUPS = groups_for(QUICK_EVENTS)

REBUILD = Scenario(
    name="rebuild",
    description=(
        f"projection rebuild speed: in a fresh database, a log of {log_events(_FULL_GROUPS):,} "
        f"events ({_FULL_GROUPS * GROUP:,} agendas; {log_events(_QUICK_GROUPS):,} events "
        "with `--quick`) is built untimed through the event store, many streams per append "
        "(asynchronous commits): each agenda has "
        f"{OPERATIONS} independent `sample` operations and the history the engine records "
        "when they succeed (submitted, dispatched, started, an `operation.started` and an "
        f"`operation.succeeded` per operation, succeeded: {EVENTS_PER_AGENDA} events, as "
        "the engine encodes them); the histories interleave, each append carrying the "
        "beginnings, the operations' starts and the endings of three successive groups of "
        f"{GROUP} agendas, and the last two groups are left in flight; then "
        "`VACUUM (ANALYZE)`. Timed: `rebuild_projections` (work queue, documents and "
        "progress rows from the whole log, in a pool of its own, `synchronous_commit=on`). "
        "Reported: events in the log per second of rebuild, and the seconds."
    ),
    measure=_measure,
)
