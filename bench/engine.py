"""popflow end to end: many small agendas of no-op operations, until every one succeeded.

Every measurement gets a fresh database on the server under test, durable commits
(``synchronous_commit=on``) and popflow's default worker settings. The agendas hold
:data:`OPERATIONS` operations of the built-in type ``sample`` with no actions, whose
handler returns at once, so only the engine's own cost is measured. They come in two
shapes (:func:`agenda_json`): *fan-out*, independent operations that may all run at once,
and *chain*, where each operation's payload references the previous one's output
(``@<op-1.out>``), so they run one after the other.

Two ways of running them:

* **Embedded** (:func:`run_engine`): one engine (:func:`popflow.bootstrap.open_engine`)
  migrates the database, then claims and runs agendas, while concurrent submitters in the
  same process send the agendas as a client would (JSON text through
  :meth:`Engine.submit`, one at a time each). The clock runs from the first submission
  until the event log holds an ``agenda.succeeded`` for every agenda.
* **Worker processes** (:func:`run_workers`): the agendas are submitted first, untimed,
  by an engine of the benchmark that neither claims nor reclaims and that is closed once
  the progress projection has caught up; then real ``popflow worker`` processes
  (:mod:`bench.worker_fleet`) take the backlog. While they start, the benchmark holds an
  exclusive lock on the work queue (``popflow.agenda_queue``), which every claim reads, so
  that no worker claims before all of them are ready; the clock starts when the last one
  says it is claiming, and the lock is released at once. It stops when every agenda has
  succeeded.

A dedicated connection watches the log for the successes, a few milliseconds apart.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypeAlias

import anyio
import asyncpg
import msgspec

from bench.scenario import Context, Figures, Scenario
from bench.server import (
    BenchError,
    database_name,
    endings_after,
    fresh_database,
    with_server_settings,
)
from bench.worker_fleet import running_workers
from popflow.bootstrap import Engine, open_engine
from popflow.engine.worker import WorkerSettings
from popflow.settings import Settings

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
Shape = Literal["fan-out", "chain"]
SHAPES: Final[tuple[Shape, ...]] = ("fan-out", "chain")

WORKER = WorkerSettings()
"""Engines and worker processes run with popflow's defaults."""
WORKER_CONCURRENCY: Final = WORKER.max_agendas
"""``--concurrency`` of every worker process: the default, agendas executed at once."""
AGENDAS: Final = 1_000
QUICK_AGENDAS: Final = 40
OPERATIONS: Final = 10
SUBMITTERS: Final = 8
PROCESSES: Final = (1, 2)
"""Worker processes of the measurements with real workers."""

_TIMEOUT_S = 600.0
_WATCH_INTERVAL_S = 0.01
_HOLD_QUEUE = "LOCK TABLE popflow.agenda_queue IN ACCESS EXCLUSIVE MODE"
"""Claims read the work queue: while this lock is held, no worker claims anything."""
_TRANSACTIONS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1"


@dataclass(frozen=True)
class Workload:
    agendas: int
    operations: int
    """Operations per agenda (type ``sample``, no actions: no-ops)."""
    submitters: int
    shape: Shape = "fan-out"


def agenda_json(operations: int, shape: Shape = "fan-out") -> bytes:
    """The agenda every submitter sends: ``operations`` no-op operations, independent
    (fan-out) or each referencing the previous one's output (chain)."""
    document: dict[str, Any] = {
        "customerId": "bench",
        "operations": [
            {"name": f"op-{n}", "type": "sample", "payload": _payload(n, shape)}
            for n in range(1, operations + 1)
        ],
    }
    return msgspec.json.encode(document)


def _payload(number: int, shape: Shape) -> dict[str, Any]:
    if shape == "fan-out" or number == 1:
        return {}
    # The output of the previous operation (``{}``) becomes this one's: a dependency.
    return {"resultPayload": f"@<op-{number - 1}.out>"}


# --- the embedded engine --------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRun:
    """What one run of the embedded engine did and what it cost."""

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
    """Run ``workload`` through a new engine on a fresh database of ``dsn``'s server.

    ``transactions`` counts those committed in the run's database (``pg_stat_database``)
    over the engine's whole life, start-up and migrations included, the watcher's excepted.
    """
    async with fresh_database(dsn) as database:
        before = await _transactions(dsn, database)
        run, watch_transactions = await _measure_embedded(database, workload)
        after = await _transactions(dsn, database, settle=True)
    return dataclasses.replace(run, transactions=after - before - watch_transactions)


class _Timing(NamedTuple):
    submit_seconds: float
    seconds: float
    watch_queries: int


def _settings(database: str) -> Settings:
    # Appends are compared with pgbench's commits, so they must be synchronous as well.
    return Settings(dsn=_durable(database), worker=WORKER)


def _durable(database: str) -> str:
    return with_server_settings(database, synchronous_commit="on")


async def _measure_embedded(database: str, workload: Workload) -> tuple[EngineRun, int]:
    """The run (without its transaction count) and the transactions the watcher ran."""
    async with open_engine(_settings(database)) as engine:
        watch = await asyncpg.connect(database)
        try:
            timing = await _timed_embedded(engine, watch, workload)
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


async def _timed_embedded(engine: Engine, watch: Connection, workload: Workload) -> _Timing:
    started = time.perf_counter()
    with anyio.fail_after(_TIMEOUT_S):
        await _submit(engine, workload)
        submitted = time.perf_counter()
        # Not before: until the last submission, the log cannot hold every success.
        queries = await _wait_for_success(watch, workload.agendas, _nothing_to_check)
    return _Timing(submitted - started, time.perf_counter() - started, queries)


async def _submit(engine: Engine, workload: Workload) -> None:
    """Every agenda, from ``workload.submitters`` concurrent submitters."""
    body = agenda_json(workload.operations, workload.shape)
    remaining = iter(range(workload.agendas))

    async def submitter() -> None:
        for _ in remaining:
            await engine.submit(body)

    async with anyio.create_task_group() as tg:
        for number in range(workload.submitters):
            tg.start_soon(submitter, name=f"bench-submitter-{number}")


def _nothing_to_check() -> None:
    """The embedded engine reports its own failures by raising."""


async def _wait_for_success(watch: Connection, agendas: int, check: Callable[[], None]) -> int:
    """Return once ``agendas`` agendas have succeeded; the number of queries it took.
    ``check`` raises when the run cannot finish any more."""
    head = succeeded = queries = 0
    while succeeded < agendas:
        await anyio.sleep(_WATCH_INTERVAL_S)  # bounds the watcher's share of the machine
        check()
        endings = await endings_after(watch, head)
        queries += 1
        head, succeeded = endings.head, succeeded + endings.succeeded
        if endings.failed:
            failed = endings.failed
            raise BenchError(f"{failed} agendas failed: the benchmark's agendas cannot fail")
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


# --- worker processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkersRun:
    """What one run of ``popflow worker`` processes did."""

    workload: Workload
    processes: int
    seconds: float
    """From the moment every worker was ready to claim until every agenda had succeeded."""
    start_seconds: float
    """From starting the processes until every one was ready."""

    @property
    def operations(self) -> int:
        return self.workload.agendas * self.workload.operations

    @property
    def operations_per_second(self) -> float:
        return self.operations / self.seconds


async def run_workers(dsn: str, workload: Workload, processes: int) -> WorkersRun:
    """Submit ``workload`` to a fresh database of ``dsn``'s server, untimed, then run it
    with ``processes`` worker processes of :data:`WORKER_CONCURRENCY` agendas each."""
    async with fresh_database(dsn) as database:
        await _submit_backlog(database, workload)
        watch = await asyncpg.connect(database)
        try:
            with anyio.fail_after(_TIMEOUT_S):
                return await _timed_workers(database, watch, workload, processes)
        finally:
            await watch.close()


async def _submit_backlog(database: str, workload: Workload) -> None:
    """Every agenda submitted and projected, by an engine that runs none of them."""
    async with open_engine(_settings(database), claim=False, reclaim=False) as engine:
        await _submit(engine, workload)
        await engine.projection.wait_for(await engine.storage.events.head(), timeout=_TIMEOUT_S)


async def _timed_workers(
    database: str, watch: Connection, workload: Workload, processes: int
) -> WorkersRun:
    gate = await asyncpg.connect(database)
    try:
        held = gate.transaction()
        await held.start()
        await gate.execute(_HOLD_QUEUE)
        async with running_workers(_durable(database), processes, WORKER_CONCURRENCY) as fleet:
            ready = await fleet.wait_until_ready()
            started = time.perf_counter()
            await held.rollback()
            await _wait_for_success(watch, workload.agendas, fleet.check)
            seconds = time.perf_counter() - started
    finally:
        await gate.close()
    return WorkersRun(
        workload=workload,
        processes=processes,
        seconds=seconds,
        start_seconds=ready - fleet.launched_at,
    )


# --- the scenario ---------------------------------------------------------------------------

EMBEDDED: Final = "embedded engine"


def processes_label(processes: int) -> str:
    return f"{processes} worker process" + ("es" if processes > 1 else "")


def figure(shape: Shape, runner: str, measure: str) -> str:
    """``end to end, fan-out, embedded engine: operations/s``."""
    return f"end to end, {shape}, {runner}: {measure}"


EMBEDDED_EVENTS: Final = figure("fan-out", EMBEDDED, "events/s")
EMBEDDED_REQUESTS_PER_COMMIT: Final = figure(
    "fan-out", EMBEDDED, "append requests per group commit"
)
EMBEDDED_TRANSACTIONS_PER_OPERATION: Final = figure(
    "fan-out", EMBEDDED, "database transactions per operation"
)


def _workload(context: Context, shape: Shape) -> Workload:
    agendas = QUICK_AGENDAS if context.quick else AGENDAS
    return Workload(agendas, OPERATIONS, SUBMITTERS, shape)


async def _measure(context: Context) -> Figures:
    figures: Figures = {}
    for shape in SHAPES:
        run = await run_engine(context.dsn, _workload(context, shape))
        context.say(
            f"  {shape}, {EMBEDDED}: {run.seconds:.2f} s, of which submitting "
            f"{run.submit_seconds:.2f} s"
        )
        figures[figure(shape, EMBEDDED, "operations/s")] = run.operations_per_second
        if shape == "fan-out":
            figures[EMBEDDED_EVENTS] = run.events_per_second
            figures[EMBEDDED_REQUESTS_PER_COMMIT] = run.requests_per_round
            figures[EMBEDDED_TRANSACTIONS_PER_OPERATION] = run.transactions_per_operation
    for processes in PROCESSES:
        for shape in SHAPES:
            workers = await run_workers(context.dsn, _workload(context, shape), processes)
            label = processes_label(processes)
            context.say(
                f"  {shape}, {label}: {workers.seconds:.2f} s, after {workers.start_seconds:.2f} s "
                "of start-up"
            )
            figures[figure(shape, label, "operations/s")] = workers.operations_per_second
    return figures


_PARAGRAPHS = (
    f"popflow end to end, {AGENDAS:,} agendas ({QUICK_AGENDAS} with `--quick`) of "
    f"{OPERATIONS} operations each, all of the built-in type `sample` without actions (the "
    "handler returns at once, so only the engine's own cost is measured), every measurement "
    "in a fresh database, `synchronous_commit=on`, popflow's default worker settings. "
    f"*Fan-out* agendas hold {OPERATIONS} independent operations; in *chain* agendas each "
    "operation's payload references the previous one's output (`@<op-1.out>`), so they "
    "run one after the other.",
    "*Embedded engine*: one engine (`open_engine`) migrates the database, then claims and "
    f"runs agendas while {SUBMITTERS} concurrent submitter tasks of the same process send "
    "the agendas as JSON text through `Engine.submit`, each waiting for its submission "
    "before the next. The clock runs from the first submission until the event log holds "
    "an `agenda.succeeded` for every agenda (a watcher polls it every 10 ms). For fan-out "
    "it also reports the events appended per second (every row of `popflow.events`), the "
    "append requests the group committer folded into each transaction, and the "
    "transactions committed in the run's database (`pg_stat_database`, the engine's whole "
    "life, start-up and migrations included) per operation.",
    "*Worker processes*: the same agendas are first submitted, untimed, by an engine of "
    "the benchmark that claims nothing, and projected; then 1 or 2 real `popflow worker "
    f"--dsn DSN --concurrency {WORKER_CONCURRENCY}` processes (the default concurrency) are "
    "started together. Meanwhile the benchmark holds an exclusive lock on the work queue "
    "table (`popflow.agenda_queue`), which every claim reads, so that no worker starts "
    "before the others; the clock starts, and the lock is released, when the last of them "
    "prints that it is claiming, and stops when the event log holds an `agenda.succeeded` "
    "for every agenda. Then the workers get SIGTERM and must exit cleanly.",
)

END_TO_END = Scenario(
    name="end-to-end",
    # Indented continuation paragraphs stay inside the report's list item.
    description="\n\n  ".join(_PARAGRAPHS),
    measure=_measure,
)
