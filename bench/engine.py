"""popflow end to end: many small agendas of no-op operations through one engine.

Each run gets a fresh database on the server under test and one engine
(:func:`popflow.bootstrap.open_engine`) with the default worker settings, which migrates
it and then claims and runs agendas. Once the engine is up, several concurrent submitters
in the same process send the agendas as a client would (JSON text through
:meth:`Engine.submit`, one at a time each) while the worker already executes the first
ones. The clock runs from the first submission until the event log holds an
``agenda.succeeded`` for every agenda; once the last submission has returned, a dedicated
connection watches the log for them.

Besides the time, a run records what it cost the database: the events appended, the
group committer's rounds and requests, and the transactions committed in the run's
database (``pg_stat_database``, over the engine's whole life, start-up included).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import anyio
import asyncpg
import msgspec

from bench.server import BenchError, database_name, fresh_database, with_server_settings
from popflow.bootstrap import Engine, open_engine
from popflow.engine.worker import WorkerSettings
from popflow.settings import Settings

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

WORKER = WorkerSettings()
"""The worker runs with popflow's defaults."""

_TIMEOUT_S = 600.0
_WATCH_INTERVAL_S = 0.01
_WATCH = """
SELECT coalesce(max(position), $1) AS head,
       count(*) FILTER (WHERE type = 'agenda.succeeded') AS succeeded,
       count(*) FILTER (WHERE type = 'agenda.failed') AS failed
FROM popflow.events
WHERE position > $1
"""
_TRANSACTIONS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1"


@dataclass(frozen=True)
class Workload:
    agendas: int
    operations: int
    """Independent operations per agenda (type ``sample``, payload ``{}``: no-ops)."""
    submitters: int


def agenda_json(operations: int) -> bytes:
    """The agenda every submitter sends: ``operations`` independent no-op operations."""
    names = (f"op-{n}" for n in range(1, operations + 1))
    document: dict[str, Any] = {
        "customerId": "bench",
        "operations": [{"name": name, "type": "sample", "payload": {}} for name in names],
    }
    return msgspec.json.encode(document)


@dataclass(frozen=True)
class EngineRun:
    """What one popflow run did and what it cost."""

    workload: Workload
    seconds: float
    """From the first submission until every agenda had succeeded."""
    submit_seconds: float
    """From the first submission until the last one returned."""
    events: int
    commit_rounds: int
    commit_requests: int
    transactions: int

    @property
    def operations(self) -> int:
        return self.workload.agendas * self.workload.operations

    @property
    def operations_per_second(self) -> float:
        return self.operations / self.seconds

    @property
    def agendas_per_second(self) -> float:
        return self.workload.agendas / self.seconds

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def requests_per_round(self) -> float:
        return self.commit_requests / max(1, self.commit_rounds)

    @property
    def transactions_per_operation(self) -> float:
        return self.transactions / self.operations


async def run_engine(dsn: str, workload: Workload) -> EngineRun:
    """Run ``workload`` through a new engine on a fresh database of ``dsn``'s server."""
    async with fresh_database(dsn) as database:
        before = await _transactions(dsn, database)
        run, watch_transactions = await _measure(database, workload)
        after = await _transactions(dsn, database, settle=True)
    return dataclasses.replace(run, transactions=after - before - watch_transactions)


class _Timing(NamedTuple):
    submit_seconds: float
    seconds: float
    watch_queries: int


async def _measure(database: str, workload: Workload) -> tuple[EngineRun, int]:
    """The run (without its transaction count) and the transactions the watcher ran."""
    # Appends are compared with pgbench's commits, so they must be synchronous as well.
    settings = Settings(dsn=with_server_settings(database, synchronous_commit="on"), worker=WORKER)
    async with open_engine(settings) as engine:
        watch = await asyncpg.connect(database)
        try:
            timing = await _timed(engine, watch, workload)
            events = int(await watch.fetchval("SELECT count(*) FROM popflow.events"))
        finally:
            await watch.close()
        committer = engine.committer
    run = EngineRun(
        workload=workload,
        seconds=timing.seconds,
        submit_seconds=timing.submit_seconds,
        events=events,
        commit_rounds=committer.rounds,
        commit_requests=committer.requests,
        transactions=0,
    )
    return run, timing.watch_queries + 1  # and the count of events


async def _timed(engine: Engine, watch: Connection, workload: Workload) -> _Timing:
    body = agenda_json(workload.operations)
    remaining = iter(range(workload.agendas))

    async def submitter() -> None:
        for _ in remaining:
            await engine.submit(body)

    started = time.perf_counter()
    with anyio.fail_after(_TIMEOUT_S):
        async with anyio.create_task_group() as tg:
            for number in range(workload.submitters):
                tg.start_soon(submitter, name=f"bench-submitter-{number}")
        submitted = time.perf_counter()
        # Not before: until the last submission, the log cannot hold every success.
        queries = await _wait_for_success(engine, watch, workload.agendas)
    return _Timing(submitted - started, time.perf_counter() - started, queries)


async def _wait_for_success(engine: Engine, watch: Connection, agendas: int) -> int:
    """Return once ``agendas`` agendas have succeeded; the number of queries it took."""
    head = succeeded = queries = 0
    while succeeded < agendas:
        await engine.storage.events.wait_for_append(head, _WATCH_INTERVAL_S * 10)
        row = await watch.fetchrow(_WATCH, head)
        assert row is not None
        queries += 1
        head, succeeded = row["head"], succeeded + row["succeeded"]
        if row["failed"]:
            raise BenchError(f"{row['failed']} agendas failed: the benchmark's agendas cannot fail")
        await anyio.sleep(_WATCH_INTERVAL_S)  # bounds the watcher's share of the machine
    return queries


async def _transactions(dsn: str, database: str, *, settle: bool = False) -> int:
    """Transactions ended in ``database``; with ``settle``, once the count stops moving
    (backends report their statistics when they exit, shortly after the pool closes)."""
    conn = await asyncpg.connect(dsn)
    try:
        count = await _transaction_count(conn, database_name(database))
        for _ in range(40 if settle else 0):
            await anyio.sleep(0.05)
            if (now := await _transaction_count(conn, database_name(database))) == count:
                break
            count = now
        return count
    finally:
        await conn.close()


async def _transaction_count(conn: Connection, database: str) -> int:
    return int(await conn.fetchval(_TRANSACTIONS, database) or 0)
