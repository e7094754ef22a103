"""Raw append throughput of popflow's PostgreSQL event store, without the engine.

Concurrent appender tasks call :meth:`PostgresEventStore.append` with one
:class:`AppendRequest` at a time, each waiting for its answer before sending the next,
for a fixed time per combination of appenders and batch size (events per request). Each
appender writes agenda streams of :data:`STREAM_EVENTS` operation events (``op-1`` to
``op-50``, each ``operation.started`` then ``operation.succeeded`` with the result ``{}``,
as the ``sample`` handler's operations record them), a batch of successive versions per
request, and starts a new stream when one is full. The same workload also goes through
the engine's :class:`GroupCommitter` with one-event requests, which folds the concurrent
requests into one transaction per round.

Every combination starts from an empty log (the event and stream tables are truncated)
after a warm-up request per appender, so that opening connections and preparing
statements is not timed. Commits are durable (``synchronous_commit=on``), as pgbench's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import asyncpg

from bench.scenario import Context, Figures, Scenario
from bench.server import BenchError, fresh_database, with_server_settings
from popflow.bootstrap import Storage, open_storage
from popflow.events.batching import GroupCommitter
from popflow.events.store import AppendRequest, AppendResult, Conflict, append_one_result
from popflow.events.vocabulary import (
    Event,
    OperationStarted,
    OperationSucceeded,
    agenda_stream,
)
from popflow.settings import Settings

APPENDERS = (1, 8)
BATCHES = (1, 10, 100)
GROUP_APPENDERS = 8
POOL_SIZE = 10
"""Connections in the pool: one listens for notifications, the others serve appenders."""
STREAM_EVENTS = 100
"""Events per agenda stream; every batch size divides it, so no request is cut short."""
SECONDS = 3.0
QUICK_SECONDS = 0.3

Append = Callable[[AppendRequest], Awaitable[AppendResult]]

OPERATION_EVENTS: tuple[Event, ...] = tuple(
    event
    for number in range(1, STREAM_EVENTS // 2 + 1)
    for event in (
        OperationStarted(operation=f"op-{number}", attempt=1, dispatch=1),
        OperationSucceeded(operation=f"op-{number}", attempt=1, result={}),
    )
)
"""The events of one stream, in order."""


def append_figure(appenders: int, batch: int) -> str:
    plural = "s" if appenders > 1 else ""
    return f"raw append, {appenders} appender{plural}, batches of {batch}: events/s"


GROUP_COMMIT_FIGURE = (
    f"raw append, {GROUP_APPENDERS} appenders through the group committer, batches of 1: events/s"
)


@dataclass
class _Writer:
    """One appender's place in its current stream."""

    batch: int
    stream: str = ""
    version: int = STREAM_EVENTS
    events: int = 0

    def next_request(self) -> AppendRequest:
        if self.version >= STREAM_EVENTS:
            self.stream, self.version = agenda_stream(str(uuid.uuid4())), 0
        batch = OPERATION_EVENTS[self.version : self.version + self.batch]
        return AppendRequest(self.stream, self.version, batch)

    async def append_with(self, append: Append) -> None:
        request = self.next_request()
        result = await append(request)
        if isinstance(result, Conflict):
            raise BenchError(
                f"append to {result.stream_id} conflicted (at version {result.actual_version}, "
                f"expected {result.expected_version}): appenders write streams of their own"
            )
        self.version += len(request.events)
        self.events += len(request.events)


async def events_per_second(
    storage: Storage, append: Append, appenders: int, batch: int, seconds: float
) -> float:
    """Events appended per second by ``appenders`` concurrent tasks for ``seconds``."""
    writers = [_Writer(batch) for _ in range(appenders)]
    async with anyio.create_task_group() as tg:  # opens the connections, prepares statements
        for writer in writers:
            tg.start_soon(writer.append_with, append)
    await _empty_log(storage)
    writers = [_Writer(batch) for _ in range(appenders)]

    async def appender(writer: _Writer, deadline: float) -> None:
        while time.perf_counter() < deadline:
            await writer.append_with(append)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for writer in writers:
            tg.start_soon(appender, writer, started + seconds)
    elapsed = time.perf_counter() - started
    return sum(writer.events for writer in writers) / elapsed


async def _empty_log(storage: Storage) -> None:
    pool = _pool(storage)
    await pool.execute("TRUNCATE popflow.events, popflow.streams")


def _pool(storage: Storage) -> asyncpg.Pool:
    if storage.pool is None:
        raise BenchError("the append benchmark needs PostgreSQL storage")
    return storage.pool


def _direct(storage: Storage) -> Append:
    async def append(request: AppendRequest) -> AppendResult:
        return await append_one_result(storage.events, request)

    return append


async def _through_group_committer(storage: Storage, seconds: float) -> float:
    committer = GroupCommitter(storage.events)
    async with anyio.create_task_group() as tg:
        await tg.start(committer.run)
        rate = await events_per_second(storage, committer.append, GROUP_APPENDERS, 1, seconds)
        tg.cancel_scope.cancel()
    return rate


async def _measure(context: Context) -> Figures:
    seconds = QUICK_SECONDS if context.quick else SECONDS
    figures: Figures = {}
    async with fresh_database(context.dsn) as database:
        dsn = with_server_settings(database, synchronous_commit="on")
        async with open_storage(Settings(dsn=dsn, pool_size=POOL_SIZE)) as storage:
            for appenders in APPENDERS:
                for batch in BATCHES:
                    name = append_figure(appenders, batch)
                    context.say(name.removesuffix(": events/s"))
                    rate = await events_per_second(
                        storage, _direct(storage), appenders, batch, seconds
                    )
                    figures[name] = rate
            context.say(GROUP_COMMIT_FIGURE.removesuffix(": events/s"))
            figures[GROUP_COMMIT_FIGURE] = await _through_group_committer(storage, seconds)
    return figures


def _batch_sizes(sizes: Sequence[int]) -> str:
    return ", ".join(str(size) for size in sizes[:-1]) + f" or {sizes[-1]}"


APPEND = Scenario(
    name="append",
    description=(
        "raw append throughput of popflow's PostgreSQL event store, no engine: in a fresh, "
        "migrated database, with `synchronous_commit=on` (every append a durable commit, as "
        f"pgbench's) and a pool of {POOL_SIZE} connections, "
        f"{' or '.join(str(n) for n in APPENDERS)} concurrent appender tasks each call "
        "`PostgresEventStore.append` with one `AppendRequest` at a time of "
        f"{_batch_sizes(BATCHES)} events, for {SECONDS:g} s per combination "
        f"({QUICK_SECONDS:g} s with `--quick`), starting from an empty log after one "
        "untimed warm-up request per appender. Each appender writes agenda streams of "
        f"{STREAM_EVENTS} events, successive versions of one stream per request and a new "
        "stream when it is full, shaped as the `sample` handler's operations record them "
        "(`operation.started` then `operation.succeeded` with the result `{}`, about 70 "
        f"bytes of JSON each). Also {GROUP_APPENDERS} appenders with one-event requests "
        "through the engine's `GroupCommitter`, which commits whatever has queued up in "
        "one append per round. Reported: events appended per second."
    ),
    measure=_measure,
)
