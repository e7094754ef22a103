"""Group commit: many concurrent appenders, one durable transaction per round.

Every agenda a worker runs appends its own small batches of events. Committing each on
its own would cost one synchronous WAL flush per append, and a 2-core machine would stall
at a few thousand commits per second. The :class:`GroupCommitter` queues appends from any
number of tasks and writes whatever has accumulated in one :meth:`EventStore.append` call.
While one round commits, the next one fills up, so batches grow with load and shrink to a
single request when idle: no timer, no added latency.

Each caller still gets its own answer: its request's :class:`Appended` or
:class:`Conflict`, or the infrastructure error that failed the round.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import anyio
from anyio.abc import TaskStatus

from popflow.errors import InfrastructureError
from popflow.events.store import AppendRequest, AppendResult, EventStore


class _Pending:
    __slots__ = ("done", "outcome", "request")

    def __init__(self, request: AppendRequest) -> None:
        self.request = request
        self.done = anyio.Event()
        self.outcome: AppendResult | Exception = InfrastructureError("the append was abandoned")


class GroupCommitter:
    """Queues appends and commits them in rounds; run :meth:`run` in a task group."""

    def __init__(self, store: EventStore, *, max_batch_events: int = 5000) -> None:
        self._store = store
        self._max_batch_events = max_batch_events
        self._queue: deque[_Pending] = deque()
        self._wakeup = anyio.Event()
        self._running = False
        self.rounds = 0
        self.requests = 0

    async def append(self, request: AppendRequest) -> AppendResult:
        """Queue ``request`` for the next round and wait for its result."""
        if not self._running:
            raise InfrastructureError("the group committer is not running")
        pending = _Pending(request)
        self._queue.append(pending)
        self._wakeup.set()
        await pending.done.wait()
        if isinstance(pending.outcome, Exception):
            raise pending.outcome
        return pending.outcome

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit rounds until cancelled; queued appends fail once it stops."""
        self._running = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    await self._wakeup.wait()
                    self._wakeup = anyio.Event()
                    continue
                await self._commit(self._take_round())
        finally:
            self._running = False
            self._fail_all(InfrastructureError("the group committer stopped"))

    def _take_round(self) -> list[_Pending]:
        batch: list[_Pending] = []
        events = 0
        while self._queue and (not batch or events < self._max_batch_events):
            pending = self._queue.popleft()
            batch.append(pending)
            events += len(pending.request.events)
        return batch

    async def _commit(self, batch: Sequence[_Pending]) -> None:
        try:
            # Shielded: once a round is sent, its outcome must reach its callers.
            with anyio.CancelScope(shield=True):
                results = await self._store.append([p.request for p in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the round
            for pending in batch:
                pending.outcome = exc
                pending.done.set()
            return
        self.rounds += 1
        self.requests += len(batch)
        for pending, result in zip(batch, results, strict=True):
            pending.outcome = result
            pending.done.set()

    def _fail_all(self, error: InfrastructureError) -> None:
        while self._queue:
            pending = self._queue.popleft()
            pending.outcome = error
            pending.done.set()
