"""The work queue on PostgreSQL: ``popflow.agenda_queue`` plus worker heartbeats.

The queue table is an inline projection (:mod:`popflow.projections.queue`) kept by the
event store in every append that touches it. A claim is one transaction: pick ready rows
with ``FOR UPDATE SKIP LOCKED`` (concurrent claimers take different agendas instead of
waiting), read their streams, decide ``Dispatch`` for each and append the events, which
updates the rows through the same inline projection before commit.

Leases are judged by the database clock (``now()``), so workers on machines with skewed
clocks still agree on who is dead.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from popflow.engine.queue import ClaimedAgenda, ExpiredLease, WorkerInfo, dispatch_request
from popflow.errors import InfrastructureError
from popflow.events.postgres import Connection, PostgresEventStore
from popflow.events.sql import load_queries
from popflow.events.store import Appended, RecordedEvent
from popflow.projections.queue import RELEVANT_TYPES, QueueEntry, fold

_Q = load_queries(__package__, "postgres_queue.sql")
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class QueueProjection:
    """Keeps ``popflow.agenda_queue`` in step with the events, inside each append."""

    relevant_types = RELEVANT_TYPES

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        relevant = [e for e in events if e.type in RELEVANT_TYPES]
        if not relevant:
            return
        streams = list(dict.fromkeys(e.stream_id for e in relevant))
        rows = await conn.fetch(_Q["load_entries"], streams)
        entries: dict[str, QueueEntry | None] = {r["stream_id"]: _entry(r) for r in rows}
        for recorded in relevant:
            entries[recorded.stream_id] = fold(entries.get(recorded.stream_id), recorded)
        await self._save(conn, entries)

    async def _save(self, conn: Connection, entries: dict[str, QueueEntry | None]) -> None:
        kept = [e for e in entries.values() if e is not None]
        gone = [stream for stream, e in entries.items() if e is None]
        if kept:
            await conn.execute(_Q["upsert_entries"], *_columns(kept))
        if gone:
            await conn.execute(_Q["delete_entries"], gone)


def _entry(row: asyncpg.Record) -> QueueEntry:
    return QueueEntry(**dict(row))


def _columns(entries: Sequence[QueueEntry]) -> tuple[list[object], ...]:
    fields = (
        "stream_id",
        "agenda_id",
        "resource_pool_id",
        "insight_id",
        "customer_id",
        "status",
        "enqueued_position",
        "dispatch",
        "worker_id",
    )
    return tuple([getattr(e, f) for e in entries] for f in fields)


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
                _Q["claim_candidates"], limit, None if insights is None else list(insights)
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
