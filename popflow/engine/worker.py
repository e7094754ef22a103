"""The worker: claims ready agendas, runs each in an :class:`AgendaExecution`, keeps its
leases alive, and stops gracefully.

Three loops, one task group:

* **claim** — while it has room for more agendas, claim a batch (one transaction) and
  start an execution per agenda; when the queue has nothing more for it, sleep until a
  *ready* wake-up (:meth:`WorkQueue.wait_for_ready`: an agenda entered the line, or left
  it while others wait) or the poll interval; when full, until an agenda finishes.
  Polling is the truth, wake-ups only shorten the wait; claims that find nothing are
  spaced by ``idle_claim_interval``;
* **heartbeat** — renew the worker's leases; if the database cannot be reached for a
  whole lease period, the leases are presumed lost and every execution is cancelled
  (fencing: the reclaimer will have handed them to someone else);
* **executions** — one per claimed agenda, bounded by ``max_agendas``; operations of all
  of them share ``max_operations`` slots.

:meth:`Worker.stop` stops claiming, lets in-flight agendas finish within the grace period,
then cancels the rest, which hand their agendas back (shielded) before the worker retires.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence

import anyio
from anyio.abc import TaskGroup, TaskStatus

from popflow.engine.clock import Clock
from popflow.engine.executor import (
    AgendaExecution,
    Append,
    ExecutorSettings,
    LeaseLost,
    opening,
)
from popflow.engine.queue import ClaimedAgenda, WorkerInfo, WorkQueue
from popflow.engine.runner import OperationRunner
from popflow.engine.slots import OperationSlots
from popflow.engine.state import AgendaState
from popflow.errors import InfrastructureError
from popflow.events.store import EventStore, RecordedEvent
from popflow.events.vocabulary import Event

log = logging.getLogger(__name__)

_TRANSACTION_GRACE = 10.0


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    max_agendas: int = 200
    """Agendas executed at once by one worker."""
    max_operations: int = 1000
    """Operations running at once across all of the worker's agendas."""
    claim_batch: int = 50
    """Most agendas claimed in one transaction."""
    poll_interval: float = 1.0
    """Longest sleep between claims when no notification arrives."""
    idle_claim_interval: float = 0.02
    """Shortest time from the second of successive claims that found nothing to the next
    claim: wake-ups for agendas the worker cannot take (an insight at its queueSize,
    agendas another claim took first) must not turn into a claim each. The first wake-up
    after a claim that found something, or after a quiet spell, is not delayed."""
    heartbeat_interval: float = 2.0
    lease_timeout: float = 30.0
    """A worker silent for this long loses its leases (to the reclaimer)."""
    shutdown_grace: float = 10.0
    """On stop, how long in-flight agendas may take to finish before they are handed back."""
    insights: tuple[str, ...] | None = None
    """Claim only from these insights (None: any)."""
    resource_pool: str | None = None
    """Claim only agendas routed to this resource pool (None: any)."""
    executor: ExecutorSettings = dataclasses.field(default_factory=ExecutorSettings)


async def _then_cancel(waiter: Callable[[], Awaitable[object]], scope: anyio.CancelScope) -> None:
    await waiter()
    scope.cancel()


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        *,
        queue: WorkQueue,
        events: EventStore,
        append: Append,
        runner: OperationRunner,
        clock: Clock,
        settings: WorkerSettings | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.worker_id = worker_id or new_worker_id()
        self.settings = settings or WorkerSettings()
        self._queue = queue
        self._events = events
        self._append = append
        self._runner = runner
        self._clock = clock
        self._slots = OperationSlots(self.settings.max_operations)
        self._executions: set[anyio.CancelScope] = set()
        self._starting = 0
        """Agendas claimed whose execution has not started yet (they count as in flight)."""
        self._room = anyio.Event()
        self._stopping = anyio.Event()
        self._registered = False
        self.finished = 0
        """Executions that ended here (completed, handed back or lost)."""

    @property
    def in_flight(self) -> int:
        """Agendas this worker holds: executing, or claimed and about to start."""
        return len(self._executions) + self._starting

    async def register(self) -> None:
        """Announce the worker (required before it holds any lease)."""
        await self._queue.register(WorkerInfo(self.worker_id, socket.gethostname(), os.getpid()))
        self._registered = True

    def stop(self) -> None:
        """Stop claiming; in-flight agendas get the grace period to finish."""
        self._stopping.set()

    async def run(
        self, *, claim: bool = True, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Work until :meth:`stop` (or cancellation). With ``claim=False`` the worker only
        heartbeats and runs what is handed to :meth:`execute`."""
        if not self._registered:
            await self.register()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, name="popflow-worker-heartbeat")
                task_status.started()
                if claim:
                    await self._claim_until_stopped(tg)
                else:
                    await self._stopping.wait()
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._retire()

    async def execute(self, history: list[RecordedEvent]) -> AgendaState:
        """Run one agenda already dispatched to this worker to its end (or hand it back)."""
        execution = self._execution(history)
        del history  # replayed: the execution keeps what it needs of it
        return await self._run(execution)

    async def _run(self, execution: AgendaExecution) -> AgendaState:
        with anyio.CancelScope() as scope:
            self._executions.add(scope)
            try:
                return await execution.run()
            finally:
                self._executions.discard(scope)
                self.finished += 1
                self._room.set()
        raise LeaseLost(f"{execution.stream_id}: execution cancelled (leases presumed lost)")

    def _execution(self, history: list[RecordedEvent], reserved: int = 0) -> AgendaExecution:
        """``reserved``: the slots the claim's opening took for the agenda."""
        return AgendaExecution(
            history,
            worker_id=self.worker_id,
            append=self._append,
            events=self._events,
            runner=self._runner,
            slots=self._slots,
            clock=self._clock,
            settings=self.settings.executor,
            reserved=reserved,
        )

    # --- claiming --------------------------------------------------------------------------

    async def _claim_until_stopped(self, tg: TaskGroup) -> None:
        empty_claims, found_nothing_at = 0, 0.0
        while not self._stopping.is_set():
            room = self.settings.max_agendas - self.in_flight
            if room < self._worthwhile_claim():
                await self._wait_for_room()
                continue
            # One claim that finds nothing is common (woken for an agenda the previous
            # claim already took); a second in a row means wake-ups it cannot use.
            if empty_claims >= 2:
                await self._pause_until(found_nothing_at + self.settings.idle_claim_interval)
            wanted = min(room, self.settings.claim_batch)
            # Taken before claiming: whatever becomes ready after it wakes us.
            mark = self._queue.ready_mark()
            claimed = await self._claim(wanted)
            if claimed:
                log.debug("claimed %d agendas", len(claimed))
            self._starting += len(claimed)
            if claimed:
                tg.start_soon(self._run_claimed, claimed, name="popflow-claimed-agendas")
            empty_claims = 0 if claimed else empty_claims + 1
            found_nothing_at = anyio.current_time()
            if len(claimed) < wanted:
                await self._wait_for_ready(mark)

    def _worthwhile_claim(self) -> int:
        """Room needed before claiming: 1 when idle; under load, a quarter batch, so that
        every finished agenda does not cost a claim transaction of its own."""
        if self.in_flight == 0:
            return 1
        return max(1, min(self.settings.claim_batch, self.settings.max_agendas) // 4)

    async def _claim(self, limit: int) -> list[tuple[ClaimedAgenda, int]]:
        """Claim and open up to ``limit`` agendas: each with the slots its opening took,
        for its execution. The slots of agendas the claim did not take in the end go back
        at once."""
        opened: dict[str, int] = {}

        def open_agenda(state: AgendaState) -> list[Event]:
            events, taken = opening(
                state, self.settings.executor, self._slots, self._clock.now_ms()
            )
            for _ in range(opened.pop(state.agenda_id, 0)):  # attempted twice: once counts
                self._slots.release()
            opened[state.agenda_id] = taken
            return events

        claimed: Sequence[ClaimedAgenda] = []
        try:
            # A claim is a short transaction: let it finish rather than abandon it half-way
            # on shutdown (bounded, in case the database hangs).
            with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _TRANSACTION_GRACE):
                try:
                    claimed = await self._queue.claim(
                        self.worker_id,
                        limit,
                        insights=self.settings.insights,
                        resource_pool=self.settings.resource_pool,
                        opening=open_agenda,
                    )
                except InfrastructureError as exc:
                    log.warning("claim failed, retrying: %s", exc)
            return [(agenda, opened.pop(agenda.agenda_id, 0)) for agenda in claimed]
        finally:  # whatever the claim did not keep, or if it failed in any way
            for taken in opened.values():
                for _ in range(taken):
                    self._slots.release()

    async def _wait_for_room(self) -> None:
        """Until an agenda finishes (it sets ``_room``), the worker stops, or the poll
        interval passes."""
        self._room = anyio.Event()
        await self._wait_for_first(self._room.wait)

    async def _wait_for_ready(self, mark: int) -> None:
        """Until something may have become claimable since ``mark``, the worker stops, or
        the poll interval passes. Appends that give nothing to claim (the events of this
        worker's claims and executions, of other workers') do not wake it."""
        await self._wait_for_first(
            functools.partial(self._queue.wait_for_ready, mark, self.settings.poll_interval)
        )

    async def _pause_until(self, deadline: float) -> None:
        """Until ``deadline`` (anyio's clock) or the worker stops: after claims that found
        nothing, wake-ups (an insight at its queueSize, agendas another claim took) must not
        turn into a claim each."""
        with anyio.move_on_after(deadline - anyio.current_time()):
            await self._stopping.wait()

    async def _wait_for_first(self, waiter: Callable[[], Awaitable[object]]) -> None:
        with anyio.move_on_after(self.settings.poll_interval):
            async with anyio.create_task_group() as race:
                for wait in (waiter, self._stopping.wait):
                    race.start_soon(_then_cancel, wait, race.cancel_scope)

    async def _run_claimed(self, claimed: Sequence[tuple[ClaimedAgenda, int]]) -> None:
        """Execute the agendas of one claim, each in a plain asyncio task supervised here:
        a worker holds thousands of agendas, and an anyio task costs about 2.5 KB more
        than an asyncio one. This task ends once every one of them has ended; cancelled
        (the worker's task group stopping), it cancels those still running and waits,
        shielded, while they hand their agendas back. A ``BaseException`` other than a
        cancel is raised here, as the task group would have raised it."""

        async def run(agenda: ClaimedAgenda, reserved: int) -> None:
            self._starting -= 1  # _run() registers the execution before it first yields
            agenda_id = agenda.agenda_id
            try:
                execution = self._execution(agenda.history, reserved)
                del agenda  # the claimed history: the execution keeps what it needs of it
                await self._run(execution)
            except LeaseLost as exc:
                log.warning("%s", exc)
            except InfrastructureError as exc:
                log.warning("agenda %s interrupted, its lease will expire: %s", agenda_id, exc)
            except Exception:
                log.exception("agenda %s failed inside the worker", agenda_id)

        def on_end(task: asyncio.Task[None]) -> None:
            remaining.discard(task)
            if not task.cancelled() and (error := task.exception()) is not None:
                crashes.append(error)
            if (crashes or not remaining) and not ended.done():
                ended.set_result(None)

        crashes: list[BaseException] = []
        ended = asyncio.get_running_loop().create_future()
        remaining = {
            asyncio.create_task(run(a, reserved), name=f"popflow-agenda-{a.agenda_id}")
            for a, reserved in claimed
        }
        del claimed  # each history is the business of its own task
        for task in remaining:
            task.add_done_callback(on_end)
        try:
            if remaining:
                await ended
        finally:
            for task in remaining:
                task.cancel()
            if remaining:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait(remaining)
        if crashes:
            raise crashes[0]

    # --- leases ----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        last_ok = self._clock.monotonic()
        while True:
            await anyio.sleep(self.settings.heartbeat_interval)
            try:
                if not await self._queue.heartbeat(self.worker_id):
                    await self.register()
                last_ok = self._clock.monotonic()
            except InfrastructureError as exc:
                log.warning("heartbeat failed: %s", exc)
                if self._clock.monotonic() - last_ok > self.settings.lease_timeout:
                    self._fence()

    def _fence(self) -> None:
        log.error(
            "no heartbeat for %.0f s: leases presumed lost, stopping %d agendas",
            self.settings.lease_timeout,
            self.in_flight,
        )
        for scope in self._executions:
            scope.cancel()

    async def _drain(self) -> None:
        with anyio.move_on_after(self.settings.shutdown_grace):
            while self._executions:
                self._room = anyio.Event()
                await self._room.wait()
        for scope in self._executions:
            scope.cancel()

    async def _retire(self) -> None:
        try:
            await self._queue.retire(self.worker_id)
        except InfrastructureError as exc:
            log.warning("could not retire worker %s: %s", self.worker_id, exc)
