"""The work queue in process memory, on top of :class:`~popflow.events.memory.MemoryEventStore`.

The queue entries are the same pure projection as in PostgreSQL
(:mod:`popflow.projections.queue`), applied inline by the memory store; claims run under
the store's lock, so they are as atomic as a database transaction, and follow the same
plan (:func:`popflow.engine.scheduling.plan_claim`). Insight policies and the customers of
a pool come from the documents, when given (without them every insight is
FirstInFirstOut and unbounded). Time for leases comes from an injected clock, which makes
lease expiry testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import groupby

import anyio

from popflow.engine.queue import (
    ClaimedAgenda,
    ExpiredLease,
    InsightQueue,
    Opening,
    WorkerInfo,
    dispatch_request,
)
from popflow.engine.scheduling import InsightLine, InsightPolicy, plan_claim, waited_seconds
from popflow.events.memory import MemoryEventStore
from popflow.events.store import Appended, RecordedEvent
from popflow.projections.documents import CUSTOMER, INSIGHT, DocumentQuery, DocumentReader
from popflow.projections.queue import RELEVANT_TYPES, QueueEntry, fold

MAX_POOL_CUSTOMERS = 100_000


class MemoryWorkQueue:
    def __init__(
        self,
        store: MemoryEventStore,
        *,
        documents: DocumentReader | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._documents = documents
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: dict[str, QueueEntry] = {}
        self._heartbeats: dict[str, float] = {}
        self._pending: dict[str, list[str]] = {}
        self._wakeups = 0
        self._woken = anyio.Event()
        store.add_inline_projection(self._apply)

    def _apply(self, events: Sequence[RecordedEvent]) -> None:
        touched: set[str] = set()
        left: set[str] = set()
        for recorded in events:
            if recorded.type not in RELEVANT_TYPES:
                continue
            touched.add(recorded.stream_id)
            before = self._entries.get(recorded.stream_id)
            entry = fold(before, recorded)
            if entry is None:
                self._entries.pop(recorded.stream_id, None)
                if before is not None:
                    left.add(before.insight_id)
            else:
                self._entries[recorded.stream_id] = entry
        if any(self._is_ready(s) for s in touched) or (
            left
            and any(e.status == "ready" and e.insight_id in left for e in self._entries.values())
        ):
            self._wake()

    def _is_ready(self, stream_id: str) -> bool:
        entry = self._entries.get(stream_id)
        return entry is not None and entry.status == "ready"

    def _wake(self) -> None:
        """The ready wake-up: the rule of migration 0008's trigger, except that an agenda
        leaving an insight wakes claimers whenever others wait there (insight documents
        are not read inline here, so queueSize is not known)."""
        self._wakeups += 1
        self._woken.set()
        self._woken = anyio.Event()

    def ready_mark(self) -> int:
        return self._wakeups

    async def wait_for_ready(self, mark: int, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            while self._wakeups <= mark:
                await self._woken.wait()

    def _line(self) -> list[QueueEntry]:
        return sorted(self._entries.values(), key=lambda e: e.enqueued_position)

    async def entries(self) -> list[QueueEntry]:
        return self._line()

    async def rebuild(self) -> None:
        async with self._store.lock:
            self._entries.clear()
            self._apply(await self._store.read_all(after=0, limit=2**62))

    async def register(self, worker: WorkerInfo) -> None:
        self._heartbeats[worker.worker_id] = self._clock()

    async def heartbeat(self, worker_id: str) -> bool:
        if worker_id not in self._heartbeats:
            return False
        self._heartbeats[worker_id] = self._clock()
        return True

    async def retire(self, worker_id: str) -> None:
        self._heartbeats.pop(worker_id, None)

    async def claim(
        self,
        worker_id: str,
        limit: int,
        *,
        insights: Sequence[str] | None = None,
        resource_pool: str | None = None,
        opening: Opening | None = None,
    ) -> list[ClaimedAgenda]:
        async with self._store.lock:
            source = _MemoryClaimSource(self, insights, resource_pool)
            claimed = []
            for reservation in await plan_claim(source, limit):
                for entry in reservation.candidates[: reservation.quota]:
                    history = await self._store.read_stream(entry.stream_id)
                    planned = dispatch_request(entry.stream_id, history, worker_id, opening)
                    if planned is None:
                        continue
                    [result] = self._store.append_locked([planned[0]])
                    if isinstance(result, Appended):
                        claimed.append(
                            ClaimedAgenda(
                                entry.agenda_id, await self._store.read_stream(entry.stream_id)
                            )
                        )
            return claimed

    async def insight_queues(self, insights: Sequence[str] | None = None) -> list[InsightQueue]:
        now = self._wall_clock()
        line = sorted(self._line(), key=lambda e: e.insight_id)
        found = {
            insight_id: _insight_queue(insight_id, list(entries), now, self._pending)
            for insight_id, entries in groupby(line, key=lambda e: e.insight_id)
        }
        if insights is None:
            return [found[i] for i in sorted(found)]
        return [
            found.get(i) or InsightQueue(insight_id=i, pending_customers=self._pending.get(i, []))
            for i in sorted(set(insights))
        ]

    async def policy(self, insight_id: str) -> InsightPolicy:
        if self._documents is None:
            return InsightPolicy()
        document = await self._documents.get(INSIGHT, insight_id)
        return InsightPolicy.of(None if document is None else document.body)

    async def pool_customers(self, resource_pool_id: str) -> list[str]:
        if self._documents is None:
            return []
        query = DocumentQuery(
            kind=CUSTOMER,
            equals=(("resourcePoolId", resource_pool_id),),
            limit=MAX_POOL_CUSTOMERS,
        )
        return [d.id for d in await self._documents.query(query)]

    def ready(self, insight_id: str) -> list[QueueEntry]:
        return [e for e in self._line() if e.status == "ready" and e.insight_id == insight_id]

    def leased(self, insight_id: str) -> int:
        return sum(
            e.status != "ready" and e.insight_id == insight_id for e in self._entries.values()
        )

    def pending(self, insight_id: str) -> list[str]:
        return list(self._pending.get(insight_id, []))

    def save_pending(self, insight_id: str, pending: Sequence[str]) -> None:
        self._pending[insight_id] = list(pending)

    async def expired_leases(self, lease_seconds: float, limit: int) -> list[ExpiredLease]:
        deadline = self._clock() - lease_seconds
        expired = [
            ExpiredLease(e.agenda_id, e.stream_id, e.worker_id, e.dispatch)
            for e in self._line()
            if e.status != "ready" and self._heartbeats.get(e.worker_id or "", -1e18) < deadline
        ]
        return expired[:limit]


def _insight_queue(
    insight_id: str, entries: list[QueueEntry], now: datetime, pending: dict[str, list[str]]
) -> InsightQueue:
    waiting = [e.ready_since for e in entries if e.status == "ready"]
    oldest = min(waiting, default=None)
    return InsightQueue(
        insight_id=insight_id,
        resource_pool_id=entries[0].resource_pool_id,
        ready=len(waiting),
        dispatched=sum(e.status == "dispatched" for e in entries),
        running=sum(e.status == "running" for e in entries),
        oldest_ready_since=oldest,
        oldest_wait_seconds=waited_seconds(oldest, now),
        pending_customers=pending.get(insight_id, []),
    )


class _MemoryClaimSource:
    """The claim planner's view of the memory queue (the store's lock is held)."""

    def __init__(
        self, queue: MemoryWorkQueue, insights: Sequence[str] | None, pool: str | None
    ) -> None:
        self._queue = queue
        self._insights = None if insights is None else frozenset(insights)
        self._pool = pool

    async def lines(self, limit: int) -> list[InsightLine]:
        first: dict[str, QueueEntry] = {}
        counts: dict[str, int] = {}
        for entry in await self._queue.entries():
            if entry.status != "ready" or not self._in_scope(entry):
                continue
            first.setdefault(entry.insight_id, entry)
            counts[entry.insight_id] = counts.get(entry.insight_id, 0) + 1
        return [
            InsightLine(
                insight_id=insight_id,
                resource_pool_id=entry.resource_pool_id,
                policy=await self._queue.policy(insight_id),
                ready=min(counts[insight_id], limit),
                oldest_position=entry.enqueued_position,
            )
            for insight_id, entry in first.items()
        ]

    def _in_scope(self, entry: QueueEntry) -> bool:
        return (self._insights is None or entry.insight_id in self._insights) and (
            self._pool is None or entry.resource_pool_id == self._pool
        )

    async def serialize(self, insight_ids: Sequence[str]) -> None:
        """Claims already take turns under the store's lock."""

    async def leased(self, insight_id: str) -> int:
        return self._queue.leased(insight_id)

    async def oldest(self, insight_id: str, limit: int) -> list[QueueEntry]:
        return self._queue.ready(insight_id)[:limit]

    async def by_priority_level(self, insight_id: str, limit: int) -> list[QueueEntry]:
        """Every ready agenda: in memory, ranking them all costs no round trip."""
        del limit
        return self._queue.ready(insight_id)

    async def by_customer(self, insight_id: str, limit: int) -> dict[str, list[QueueEntry]]:
        backlog: dict[str, list[QueueEntry]] = {}
        for entry in self._queue.ready(insight_id):
            waiting = backlog.setdefault(entry.customer_id, [])
            if len(waiting) < limit:
                waiting.append(entry)
        return backlog

    async def pool_customers(self, resource_pool_id: str) -> list[str]:
        return await self._queue.pool_customers(resource_pool_id)

    async def pending_customers(self, insight_id: str) -> list[str]:
        return self._queue.pending(insight_id)

    async def save_pending_customers(self, insight_id: str, pending: Sequence[str]) -> None:
        self._queue.save_pending(insight_id, pending)
