"""The work queue on PostgreSQL: ``popflow.agenda_queue`` plus worker heartbeats.

The queue table is an inline projection of the agenda streams, kept by a trigger on
``popflow.events`` within every append (the work-queue and scheduling migrations; the same
fold as :mod:`popflow.projections.queue`). A claim is one transaction: plan what to take
(:func:`popflow.engine.scheduling.plan_claim`, reading the queue through the queries of
``postgres_queue.sql``), reserve each agenda by a per-stream advisory lock that is tried
and never waited for (concurrent claimers take different agendas instead of waiting; why
not row locks: see the queries) and read its stream in the same statement, decide
``Dispatch`` for each and append the events, which update the rows through the trigger
before commit.

Idle workers wait for notifications on :data:`READY_CHANNEL`, which a trigger sends when
an append may have given them something to claim (see migration 0008).

Leases are judged by the database clock (``now()``), so workers on machines with skewed
clocks still agree on who is dead.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from popflow.engine.queue import (
    ClaimedAgenda,
    ExpiredLease,
    InsightQueue,
    Opening,
    WorkerInfo,
    dispatch_request,
)
from popflow.engine.scheduling import InsightLine, InsightPolicy, Reservation, plan_claim
from popflow.errors import InfrastructureError
from popflow.events.postgres import Connection, Notices, PostgresEventStore
from popflow.events.sql import load_queries
from popflow.events.store import Appended, RecordedEvent
from popflow.projections.queue import QueueEntry

_Q = load_queries(__package__, "postgres_queue.sql")
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
READY_CHANNEL = "popflow_ready"
"""Notified by a trigger when an append may give claimers work (migration 0008)."""
CLAIM_LOCK_CLASS = 0x706F70  # first key of the per-stream claim locks (two-key form)
INSIGHT_LOCK_CLASS = 0x706F71  # first key of the per-insight claim locks


class PostgresWorkQueue:
    def __init__(self, store: PostgresEventStore) -> None:
        self._store = store
        self._ready: Notices | None = None

    async def register(self, worker: WorkerInfo) -> None:
        await self._execute(_Q["register"], worker.worker_id, worker.host, worker.pid)
        await self._ready_notices()  # listening before the worker's first claim

    def ready_mark(self) -> int:
        return 0 if self._ready is None else self._ready.received

    async def wait_for_ready(self, mark: int, timeout: float) -> None:
        ready = await self._ready_notices()
        await ready.wait(lambda: ready.received > mark, timeout)

    async def _ready_notices(self) -> Notices:
        if self._ready is None:
            self._ready = await self._store.notices(READY_CHANNEL)
        return self._ready

    async def heartbeat(self, worker_id: str) -> bool:
        status = await self._execute(_Q["heartbeat"], worker_id)
        return status.endswith(" 1")

    async def retire(self, worker_id: str) -> None:
        await self._execute(_Q["retire"], worker_id)

    async def claim(
        self,
        worker_id: str,
        limit: int,
        *,
        insights: Sequence[str] | None = None,
        resource_pool: str | None = None,
        opening: Opening | None = None,
    ) -> list[ClaimedAgenda]:
        async with self._store.transaction() as tx:
            source = _PostgresClaimSource(tx.conn, insights, resource_pool)
            histories = await self._reserve(tx.conn, await plan_claim(source, limit))
            if not histories:
                return []
            planned = [
                plan
                for stream_id, history in histories.items()
                if (plan := dispatch_request(stream_id, history, worker_id, opening))
            ]
            outcomes = await tx.append_recorded([request for request, _ in planned])
        return [
            ClaimedAgenda(state.agenda_id, [*histories[request.stream_id], *recorded])
            for (request, state), (result, recorded) in zip(planned, outcomes, strict=True)
            if isinstance(result, Appended)
        ]

    async def insight_queues(self, insights: Sequence[str] | None = None) -> list[InsightQueue]:
        try:
            rows = await self._store.pool.fetch(
                _Q["insight_queues"], None if insights is None else list(insights)
            )
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not read the queues: {exc}") from exc
        return [InsightQueue(**dict(row)) for row in rows]

    async def entries(self) -> list[QueueEntry]:
        """The queue, in line order (for inspection and tests)."""
        try:
            rows = await self._store.pool.fetch(_Q["entries"])
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not read the queue: {exc}") from exc
        return [QueueEntry(**dict(row)) for row in rows]

    async def rebuild(self) -> None:
        await self._execute(_Q["rebuild"])

    async def expired_leases(self, lease_seconds: float, limit: int) -> list[ExpiredLease]:
        try:
            rows = await self._store.pool.fetch(_Q["expired_leases"], lease_seconds, limit)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not look for expired leases: {exc}") from exc
        return [ExpiredLease(**dict(row)) for row in rows]

    async def _execute(self, query: str, *args: object) -> str:
        try:
            return await self._store.pool.execute(query, *args)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"work queue operation failed: {exc}") from exc

    async def _reserve(
        self, conn: Connection, plan: Sequence[Reservation]
    ) -> dict[str, list[RecordedEvent]]:
        """The streams a claim takes, in claim order, with their histories: per insight,
        the first of its candidates (up to its quota) that no concurrent claim holds, each
        reserved until the claim commits."""
        histories: dict[str, list[RecordedEvent]] = {}
        for reservation in plan:
            rows = await conn.fetch(
                _Q["reserve"],
                [c.stream_id for c in reservation.candidates],
                reservation.quota,
                CLAIM_LOCK_CLASS,
            )
            histories.update(self._store.group_streams(rows))
        return histories


class _PostgresClaimSource:
    """The claim planner's view of the queue, inside the claim's transaction."""

    def __init__(self, conn: Connection, insights: Sequence[str] | None, pool: str | None) -> None:
        self._conn = conn
        self._insights = None if insights is None else list(insights)
        self._pool = pool

    async def lines(self, limit: int) -> list[InsightLine]:
        if self._insights is None and self._pool is None:
            rows = await self._conn.fetch(_Q["claim_lines_everywhere"], limit)
        else:
            rows = await self._conn.fetch(_Q["claim_lines"], limit, self._insights, self._pool)
        return [
            InsightLine(
                insight_id=row["insight_id"],
                resource_pool_id=row["resource_pool_id"],
                policy=InsightPolicy.of(
                    None if row["insight"] is None else msgspec.json.decode(row["insight"])
                ),
                ready=row["ready"],
                oldest_position=row["oldest_position"],
            )
            for row in rows
        ]

    async def serialize(self, insight_ids: Sequence[str]) -> None:
        await self._conn.fetchval(_Q["serialize"], list(insight_ids), INSIGHT_LOCK_CLASS)

    async def leased(self, insight_id: str) -> int:
        count: int = await self._conn.fetchval(_Q["leased"], insight_id)
        return count

    async def oldest(self, insight_id: str, limit: int) -> list[QueueEntry]:
        return _entries(await self._conn.fetch(_Q["oldest"], insight_id, limit))

    async def by_priority_level(self, insight_id: str, limit: int) -> list[QueueEntry]:
        return _entries(await self._conn.fetch(_Q["by_priority_level"], insight_id, limit))

    async def by_customer(self, insight_id: str, limit: int) -> dict[str, list[QueueEntry]]:
        backlog: dict[str, list[QueueEntry]] = {}
        for entry in _entries(await self._conn.fetch(_Q["by_customer"], insight_id, limit)):
            backlog.setdefault(entry.customer_id, []).append(entry)
        return backlog

    async def pool_customers(self, resource_pool_id: str) -> list[str]:
        rows = await self._conn.fetch(_Q["pool_customers"], resource_pool_id)
        return [row["id"] for row in rows]

    async def pending_customers(self, insight_id: str) -> list[str]:
        pending: list[str] | None = await self._conn.fetchval(_Q["pending_customers"], insight_id)
        return list(pending or [])

    async def save_pending_customers(self, insight_id: str, pending: Sequence[str]) -> None:
        await self._conn.execute(_Q["save_pending_customers"], insight_id, list(pending))


def _entries(rows: Sequence[asyncpg.Record]) -> list[QueueEntry]:
    return [QueueEntry(**dict(row)) for row in rows]
