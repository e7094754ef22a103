"""The reclaimer: gives agendas held by silent workers back to the queue.

A lease is valid while its worker heartbeats. Every ``interval`` the reclaimer asks the
queue for leases older than ``lease_timeout`` and appends ``agenda.reclaimed`` to each of
those agendas at the version it read, so a worker that is merely slow (and appends first)
wins the race and keeps its agenda. A reclaimed agenda goes back to its old place in line
and the next worker to claim it resumes it from its history: succeeded operations are not
run again, interrupted ones resume their attempt with their last progress.

Any number of reclaimers may run (one per worker process): the appends are fenced by
version, so each lease is reclaimed once. The identity of an external executor (one per
agenda it was handed) is retired with the lease it lost.
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskStatus

from popflow.engine.clock import Clock
from popflow.engine.decide import Reclaim, decide, is_current
from popflow.engine.queue import EXTERNAL_WORKER_PREFIX, ExpiredLease, WorkQueue
from popflow.engine.state import replay
from popflow.engine.timed import sweep_every
from popflow.events.store import (
    Appended,
    AppendRequest,
    AppendResult,
    EventStore,
    RecordedEvent,
)

log = logging.getLogger(__name__)


class Reclaimer:
    def __init__(
        self,
        *,
        queue: WorkQueue,
        events: EventStore,
        clock: Clock,
        lease_timeout: float = 30.0,
        interval: float = 5.0,
        batch: int = 100,
    ) -> None:
        self._queue = queue
        self._events = events
        self._clock = clock
        self._lease_timeout = lease_timeout
        self._interval = interval
        self._batch = batch
        self.reclaimed = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await sweep_every(self._interval, self.sweep, what="reclaimer", task_status=task_status)

    async def sweep(self) -> int:
        """Reclaim every expired lease; returns how many agendas were handed back."""
        expired = await self._queue.expired_leases(self._lease_timeout, self._batch)
        if not expired:
            return 0
        histories = await self._events.read_streams([e.stream_id for e in expired])
        requests = [r for e in expired if (r := self._request(e, histories.get(e.stream_id, [])))]
        results = await self._events.append(requests)
        await self._retire_external(expired, results)
        count = sum(isinstance(r, Appended) for r in results)
        self.reclaimed += count
        if count:
            log.info("reclaimed %d agendas from silent workers", count)
        return count

    async def _retire_external(
        self, expired: list[ExpiredLease], results: list[AppendResult]
    ) -> None:
        """An external executor's identity holds one agenda: once that agenda is reclaimed
        the identity is finished with (otherwise its row would stay forever)."""
        reclaimed = {r.stream_id for r in results if isinstance(r, Appended)}
        for lease in expired:
            worker = lease.worker_id
            if (
                lease.stream_id in reclaimed
                and worker
                and worker.startswith(EXTERNAL_WORKER_PREFIX)
            ):
                await self._queue.retire(worker)

    def _request(self, lease: ExpiredLease, history: list[RecordedEvent]) -> AppendRequest | None:
        state = replay(e.event for e in history)
        if state is None or not is_current(state, lease.dispatch):
            return None
        reason = (
            f"worker {lease.worker_id} sent no heartbeat for {self._lease_timeout:g} s"
            if lease.worker_id
            else "the agenda had no live worker"
        )
        events = decide(state, Reclaim(lease.dispatch, reason), self._clock.now_ms())
        return AppendRequest(lease.stream_id, state.version, events)
