"""The work queue in process memory, on top of :class:`~popflow.events.memory.MemoryEventStore`.

The queue entries are the same pure projection as in PostgreSQL
(:mod:`popflow.projections.queue`), applied inline by the memory store; claims run under
the store's lock, so they are as atomic as a database transaction. Time for leases comes
from an injected clock, which makes lease expiry testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from popflow.engine.queue import ClaimedAgenda, ExpiredLease, WorkerInfo, dispatch_request
from popflow.events.memory import MemoryEventStore
from popflow.events.store import Appended, RecordedEvent
from popflow.projections.queue import RELEVANT_TYPES, QueueEntry, fold


class MemoryWorkQueue:
    def __init__(
        self, store: MemoryEventStore, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._clock = clock
        self._entries: dict[str, QueueEntry] = {}
        self._heartbeats: dict[str, float] = {}
        store.add_inline_projection(self._apply)

    def _apply(self, events: Sequence[RecordedEvent]) -> None:
        for recorded in events:
            if recorded.type not in RELEVANT_TYPES:
                continue
            entry = fold(self._entries.get(recorded.stream_id), recorded)
            if entry is None:
                self._entries.pop(recorded.stream_id, None)
            else:
                self._entries[recorded.stream_id] = entry

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
        self, worker_id: str, limit: int, *, insights: Sequence[str] | None = None
    ) -> list[ClaimedAgenda]:
        async with self._store.lock:
            ready = [
                e
                for e in self._line()
                if e.status == "ready" and (insights is None or e.insight_id in insights)
            ][:limit]
            claimed = []
            for entry in ready:
                history = await self._store.read_stream(entry.stream_id)
                planned = dispatch_request(entry.stream_id, history, worker_id)
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

    async def expired_leases(self, lease_seconds: float, limit: int) -> list[ExpiredLease]:
        deadline = self._clock() - lease_seconds
        expired = [
            ExpiredLease(e.agenda_id, e.stream_id, e.worker_id, e.dispatch)
            for e in self._line()
            if e.status != "ready" and self._heartbeats.get(e.worker_id or "", -1e18) < deadline
        ]
        return expired[:limit]
