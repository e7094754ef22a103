"""The work queue on PostgreSQL: ``popflow.agenda_queue`` plus worker heartbeats.

The queue table is an inline projection of the agenda streams, kept by a trigger on
``popflow.events`` within every append (the work-queue migration; the same fold as
:mod:`popflow.projections.queue`). A claim is one transaction: pick ready rows, each
reserved by a per-stream advisory lock that is tried and never waited for (concurrent
claimers take different agendas instead of waiting; why not row locks: see the query),
read their streams, decide ``Dispatch`` for each and append the events, which update the
rows through the trigger before commit.

Leases are judged by the database clock (``now()``), so workers on machines with skewed
clocks still agree on who is dead.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from popflow.engine.queue import ClaimedAgenda, ExpiredLease, WorkerInfo, dispatch_request
from popflow.errors import InfrastructureError
from popflow.events.postgres import PostgresEventStore
from popflow.events.sql import load_queries
from popflow.events.store import Appended
from popflow.projections.queue import QueueEntry

_Q = load_queries(__package__, "postgres_queue.sql")
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
CLAIM_LOCK_CLASS = 0x706F70  # first key of the per-stream claim locks (two-key form)


class PostgresWorkQueue:
    def __init__(self, store: PostgresEventStore) -> None:
        self._store = store

    async def register(self, worker: WorkerInfo) -> None:
        await self._execute(_Q["register"], worker.worker_id, worker.host, worker.pid)

    async def heartbeat(self, worker_id: str) -> bool:
        status = await self._execute(_Q["heartbeat"], worker_id)
        return status.endswith(" 1")

    async def retire(self, worker_id: str) -> None:
        await self._execute(_Q["retire"], worker_id)

    async def claim(
        self, worker_id: str, limit: int, *, insights: Sequence[str] | None = None
    ) -> list[ClaimedAgenda]:
        async with self._store.transaction() as tx:
            candidates = await tx.conn.fetch(
                _Q["claim_candidates"],
                limit,
                None if insights is None else list(insights),
                CLAIM_LOCK_CLASS,
            )
            if not candidates:
                return []
            histories = await tx.read_streams([c["stream_id"] for c in candidates])
            planned = [
                (c["agenda_id"], plan)
                for c in candidates
                if (
                    plan := dispatch_request(
                        c["stream_id"], histories.get(c["stream_id"], []), worker_id
                    )
                )
            ]
            outcomes = await tx.append_recorded([request for _, (request, _) in planned])
        return [
            ClaimedAgenda(agenda_id, [*histories[request.stream_id], *recorded])
            for (agenda_id, (request, _)), (result, recorded) in zip(planned, outcomes, strict=True)
            if isinstance(result, Appended)
        ]

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
