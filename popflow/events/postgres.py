"""The PostgreSQL event store (asyncpg).

An append is one call of the ``popflow.append_events`` function (migrations 0006 and 0009):
it checks and advances the versions of the streams involved (locking their rows), marks
itself as in flight and takes positions, all in one round trip. Appends to different
streams commit in parallel and can share a WAL flush; readers (``read_all``, ``head``)
never return a position at or above the mark of an append still in flight, so they never
see a gap that fills in later.

Once an append has committed, the store announces it: to this process's waiters at once,
and to other processes by a notification on ``popflow_events`` sent afterwards, in a
transaction of its own that commits asynchronously. Not from inside the append: a
transaction that notifies holds a server-wide lock until its commit is durable, which
would make every append commit alone (migration 0009 has the numbers). Announcements
are coalesced: while one is being sent, later appends only raise the position the next
one carries.
Batches that hold several requests for the same stream are split into rounds applied in
order inside one transaction, so each request is checked against the stream as the
previous ones left it.

Tables that must never lag the events (the work queue) follow them through a trigger
inside the same statement (see the work-queue migration); everything else reads the log
after the fact.

Event payloads are stored as ``jsonb``: they can be inspected with plain SQL, e.g.
``SELECT data->>'operation' FROM popflow.events WHERE type = 'operation.failed'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import anyio
import asyncpg
import asyncpg.pool

from popflow.errors import InfrastructureError
from popflow.events.codec import Codec, default_codec
from popflow.events.sql import load_queries
from popflow.events.store import Appended, AppendRequest, AppendResult, Conflict, RecordedEvent
from popflow.events.vocabulary import event_type

log = logging.getLogger(__name__)

_Q = load_queries(__package__, "postgres.sql")
CHANNEL = "popflow_events"
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)
"""A connection, or a pool's proxy of one."""


class PostgresEventStore:
    """The :class:`~popflow.events.store.EventStore` on a PostgreSQL connection pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        codec: Codec | None = None,
    ) -> None:
        self._pool = pool
        self._codec = codec or default_codec()
        self._listener: Connection | None = None
        self._notices: dict[str, Notices] = {CHANNEL: Notices()}
        """The channels listened to (appends, and any added by :meth:`notices`)."""
        self._announced = 0
        """The last position this store has announced to its own waiters."""
        self._sent = 0
        """The last position announced to other processes."""
        self._announcer: asyncio.Task[None] | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # --- writing --------------------------------------------------------------------------

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        if not requests:
            return []
        rounds = _rounds(requests)
        try:
            if len(rounds) == 1:  # the common case: one statement, its own transaction
                async with self._pool.acquire() as conn:
                    rows = await self._append_round(conn, rounds[0])
                self._announce(_last_position(rows))
                return [_result(r, row) for r, row in zip(requests, rows, strict=True)]
            async with self.transaction() as tx:
                return await tx.append(requests)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not append events: {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """A transaction in which SQL and appends commit together (claims use it)."""
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    tx = PostgresTransaction(self, conn)
                    yield tx
                self._announce(tx.last_position)  # committed
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"transaction failed: {exc}") from exc

    def _announce(self, position: int) -> None:
        """Tell waiters that the log reaches ``position`` (0: nothing was appended): in
        this process at once, others by a notification sent after the commit."""
        if position <= self._announced:
            return
        self._announced = position
        self._notices[CHANNEL].note(str(position))
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.get_running_loop().create_task(
                self._send_announcements(), name="popflow-append-announcer"
            )

    async def _send_announcements(self) -> None:
        while self._sent < self._announced:
            position = self._announced
            try:
                await self._pool.execute(_Q["announce"], CHANNEL, str(position))
            except _DRIVER_ERRORS as exc:  # a hint only: other processes poll
                log.debug("could not announce position %d: %s", position, exc)
                return
            self._sent = position

    async def _append_round(
        self, conn: Connection, requests: Sequence[AppendRequest]
    ) -> list[asyncpg.Record]:
        """One ``append_events`` call for requests of distinct streams: a row per request."""
        encoded = [[self._codec.encode(e).decode() for e in r.events] for r in requests]
        return await conn.fetch(_Q["append_events"], *_append_arguments(requests, encoded))

    # --- reading --------------------------------------------------------------------------

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        upper = to_version if to_version is not None else 2**62
        rows = await self._fetch(_Q["read_stream"], stream_id, after_version, upper)
        return [self._decode(row) for row in rows]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        rows = await self._fetch(_Q["read_streams"], list(stream_ids))
        return self.group_streams(rows)

    def group_streams(self, rows: Sequence[asyncpg.Record]) -> dict[str, list[RecordedEvent]]:
        """Decode rows of ``read_streams`` (ordered by stream, then version)."""
        streams: dict[str, list[RecordedEvent]] = {}
        for row in rows:
            streams.setdefault(row["stream_id"], []).append(self._decode(row))
        return streams

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        rows = await self._fetch(_Q["read_all"], after, limit)
        return [self._decode(row) for row in rows]

    async def stream_version(self, stream_id: str) -> int:
        return int(await self._fetchval(_Q["stream_version"], stream_id))

    async def head(self) -> int:
        return int(await self._fetchval(_Q["head"]))

    def _decode(self, row: asyncpg.Record) -> RecordedEvent:
        event = self._codec.decode(row["type"], row["data"])
        return RecordedEvent(
            position=row["position"],
            stream_id=row["stream_id"],
            version=row["version"],
            type=event_type(event),  # the current tag, also for an upcast old shape
            event=event,
            recorded_at=row["recorded_at"],
        )

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(query, *args)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not read events: {exc}") from exc

    async def _fetchval(self, query: str, *args: Any) -> Any:
        try:
            return await self._pool.fetchval(query, *args)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not read events: {exc}") from exc

    # --- wake-ups -------------------------------------------------------------------------

    async def listen(self) -> None:
        """Start receiving notifications (call once; :meth:`close` stops)."""
        try:
            listener = await self._pool.acquire()
            for channel in self._notices:
                await listener.add_listener(channel, self._notified)
            self._listener = listener
        except _DRIVER_ERRORS as exc:
            log.warning("LISTEN failed, relying on polling: %s", exc)

    async def notices(self, channel: str) -> Notices:
        """The notifications on ``channel``, listened to from now on (while the store
        listens; without a listener nothing arrives and waits last their timeout)."""
        notices = self._notices.get(channel)
        if notices is None:
            notices = self._notices[channel] = Notices()
            if self._listener is not None:
                try:
                    await self._listener.add_listener(channel, self._notified)
                except _DRIVER_ERRORS as exc:
                    log.warning("LISTEN %s failed, relying on polling: %s", channel, exc)
        return notices

    async def close(self) -> None:
        announcer, self._announcer = self._announcer, None
        if announcer is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await asyncio.wait([announcer])  # the last appends reach the others
            announcer.cancel()
        listener, self._listener = self._listener, None
        if listener is not None:
            with anyio.CancelScope(shield=True):
                try:
                    for channel in self._notices:
                        await listener.remove_listener(channel, self._notified)
                finally:
                    await self._pool.release(listener)  # type: ignore[arg-type]

    def _notified(self, _conn: Connection, _pid: int, channel: str, payload: object) -> None:
        notices = self._notices.get(channel)
        if notices is not None:
            notices.note(str(payload))

    async def wait_for_append(self, after: int, timeout: float) -> None:
        appends = self._notices[CHANNEL]
        await appends.wait(lambda: appends.latest > after, timeout)


class Notices:
    """The notifications received on one channel: how many, the highest position they
    carried (their payload), and a wake-up for the tasks waiting on them."""

    def __init__(self) -> None:
        self.received = 0
        self.latest = 0
        self._arrived = anyio.Event()

    def note(self, payload: str) -> None:
        self.received += 1
        with contextlib.suppress(ValueError):
            self.latest = max(self.latest, int(payload))
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait(self, done: Callable[[], bool], timeout: float) -> None:
        """Until ``done()`` holds (checked on each notification) or ``timeout`` passes."""
        if done():
            return
        with anyio.move_on_after(timeout):
            while not done():
                await self._arrived.wait()


class PostgresTransaction:
    """An open transaction of the store: raw SQL on :attr:`conn`, appends via :meth:`append`."""

    def __init__(self, store: PostgresEventStore, conn: Connection) -> None:
        self._store = store
        self.conn = conn
        self.last_position = 0
        """The last position this transaction appended (0: none yet)."""

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        rows = await self.conn.fetch(_Q["read_streams"], list(stream_ids))
        return self._store.group_streams(rows)

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        return [_result(r, row) for r, row in await self._append_rows(requests)]

    async def append_recorded(
        self, requests: Sequence[AppendRequest]
    ) -> list[tuple[AppendResult, list[RecordedEvent]]]:
        """Like :meth:`append`, also returning each request's events as recorded."""
        return [
            (_result(r, row), _recorded(r, row)) for r, row in await self._append_rows(requests)
        ]

    async def _append_rows(
        self, requests: Sequence[AppendRequest]
    ) -> list[tuple[AppendRequest, asyncpg.Record]]:
        """Each request with its row of ``append_events``, round by round, in request order."""
        rows: dict[int, asyncpg.Record] = {}
        for round_ in _rounds(requests):
            done = await self._store._append_round(self.conn, round_)
            self.last_position = max(self.last_position, _last_position(done))
            rows.update((id(r), row) for r, row in zip(round_, done, strict=True))
        return [(r, rows[id(r)]) for r in requests]


def _rounds(requests: Sequence[AppendRequest]) -> list[list[AppendRequest]]:
    """Split a batch so that no round holds two requests for the same stream."""
    rounds: list[list[AppendRequest]] = []
    depth: dict[str, int] = {}
    for request in requests:
        level = depth.get(request.stream_id, 0)
        if level == len(rounds):
            rounds.append([])
        rounds[level].append(request)
        depth[request.stream_id] = level + 1
    return rounds


def _append_arguments(
    requests: Sequence[AppendRequest], encoded: list[list[str]]
) -> tuple[Any, ...]:
    """The arguments of ``popflow.append_events``: per request, then per event, flattened."""
    event_request: list[int] = []
    event_version: list[int] = []
    types: list[str] = []
    data: list[str] = []
    for index, (request, payloads) in enumerate(zip(requests, encoded, strict=True), start=1):
        first = request.expected_version + 1
        event_request += [index] * len(payloads)
        event_version += range(first, first + len(payloads))
        types += [event_type(event) for event in request.events]
        data += payloads
    return (
        [r.stream_id for r in requests],
        [r.expected_version for r in requests],
        [len(r.events) for r in requests],
        event_request,
        event_version,
        types,
        data,
    )


def _last_position(rows: Sequence[asyncpg.Record]) -> int:
    """The highest position ``append_events`` returned (0 when it appended nothing)."""
    return max((row["positions"][-1] for row in rows if row["positions"]), default=0)


def _result(request: AppendRequest, row: asyncpg.Record) -> AppendResult:
    if not row["appended"]:
        return Conflict(request.stream_id, request.expected_version, row["version"])
    positions = row["positions"]  # None when there was nothing to append: a no-op
    return Appended(request.stream_id, row["version"], positions[-1] if positions else 0)


def _recorded(request: AppendRequest, row: asyncpg.Record) -> list[RecordedEvent]:
    """The events of an appended request as stored (none for a conflict)."""
    positions = row["positions"] if row["appended"] else None
    if not positions:
        return []
    return [
        RecordedEvent(
            position=position,
            stream_id=request.stream_id,
            version=request.expected_version + offset,
            type=event_type(event),
            event=event,
            recorded_at=row["recorded_at"],
        )
        for offset, (position, event) in enumerate(
            zip(positions, request.events, strict=True), start=1
        )
    ]
