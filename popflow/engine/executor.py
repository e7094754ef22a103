"""The executor: one task per claimed agenda, driving its operations to the end.

An :class:`AgendaExecution` is a small actor. It owns the agenda's state while its worker
holds the lease, and everything that happens to the agenda arrives in its inbox: an
operation finished, an operation reported progress, a worker-wide operation slot became
free. Each turn it

1. plans: starts every operation whose dependencies succeeded (bounded per agenda and by
   the worker's slots), or concludes the agenda when nothing is running or startable;
2. flushes: turns the turn's commands into events with :func:`~popflow.engine.decide.decide`
   and appends them in one request, which the group committer batches with other agendas;
3. launches the operations whose start was just recorded, through the runner port;
4. waits for the next messages and records their outcomes (coalescing progress reports).

Because a start is recorded before the operation runs and every append names the version
it expects, an agenda has exactly one owner: if the reclaimer took it back (the worker was
too slow to heartbeat), the next append conflicts, the execution re-reads the stream, sees
the new dispatch, records its late outcomes as ignored and stops. If the worker shuts
down, the execution hands the agenda back at once (a shielded ``agenda.reclaimed``), so
another worker resumes it without waiting for the lease to expire.

Operations run as plain asyncio tasks, supervised by the execution
(:mod:`popflow.engine.operation_tasks` says why and how): every one has ended before
:meth:`AgendaExecution.run` returns or raises, and the hand-back comes after them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import anyio
import msgspec

from popflow.engine.clock import Clock
from popflow.engine.decide import (
    Command,
    Finish,
    Reclaim,
    RecordOutcome,
    ReportProgress,
    Start,
    StartOperation,
    decide,
    is_current,
    startable,
)
from popflow.engine.operation_tasks import (
    Crashed,
    Finished,
    Message,
    OperationTasks,
    Progressed,
    SlotGranted,
)
from popflow.engine.references import (
    AGENDA_ID_TOKEN,
    OPERATION_NAME_TOKEN,
    output_name,
    referenced_operation,
    resolve,
)
from popflow.engine.runner import Failed, Invocation, OperationRunner, diagnostic
from popflow.engine.slots import OperationSlots
from popflow.engine.state import (
    AgendaState,
    AgendaStatus,
    OperationState,
    OperationStatus,
    evolve,
    replay,
)
from popflow.errors import InvalidTransition
from popflow.events.store import Appended, AppendRequest, AppendResult, EventStore, RecordedEvent
from popflow.events.vocabulary import JSON, AgendaDispatched, Event, OperationStarted
from popflow.projections.progress import ProgressView, fold_all

log = logging.getLogger(__name__)

Append = Callable[[AppendRequest], Awaitable[AppendResult]]


@dataclasses.dataclass(frozen=True)
class ExecutorSettings:
    max_parallel_operations: int = 50
    """Operations of one agenda that may run at once."""
    progress_interval: float = 1.0
    """Seconds between recorded progress reports of one agenda (reports are coalesced)."""
    append_attempts: int = 5
    """Re-decisions after a concurrent append before giving the agenda up."""


_SLOT_GRANTED = SlotGranted()
_NONE_STARTED: frozenset[str] = frozenset()
"""What most executions start from: no operation an earlier dispatch started (shared)."""


def opening(
    state: AgendaState, settings: ExecutorSettings, slots: OperationSlots, now_ms: int
) -> tuple[list[Event], int]:
    """The events that open the execution of ``state``, an agenda just dispatched:
    ``agenda.started`` and the start of every operation that may start now, as the first
    turn of an :class:`AgendaExecution` would record them (up to
    ``max_parallel_operations`` and the worker's free slots, which it takes); and how many
    slots it took. A claim appends them with the dispatch (:data:`popflow.engine.queue.Opening`);
    the execution then receives the slots (``reserved``) and launches those operations
    at once."""
    if state.status is not AgendaStatus.DISPATCHED:
        return [], 0
    events = decide(state, Start(state.dispatch), now_ms)
    for event in events:
        state = evolve(state, event)
    taken = 0
    for name in startable(state):
        if taken >= settings.max_parallel_operations or not slots.try_acquire():
            break
        taken += 1
        started = decide(state, StartOperation(name, state.dispatch), now_ms)
        for event in started:
            state = evolve(state, event)
        events.extend(started)
    return events, taken


class LeaseLost(Exception):
    """The agenda was reclaimed from this worker while it ran."""


class AgendaExecution:
    def __init__(
        self,
        history: list[RecordedEvent],
        *,
        worker_id: str,
        append: Append,
        events: EventStore,
        runner: OperationRunner,
        slots: OperationSlots,
        clock: Clock,
        settings: ExecutorSettings,
        reserved: int = 0,
    ) -> None:
        """``reserved``: worker slots already taken for operations whose start the history
        records under the current dispatch (by the claim's :func:`opening`), launched on
        the first turn."""
        state = replay(e.event for e in history)
        if state is None:
            raise InvalidTransition("cannot execute an empty history")
        self._state = self._tentative = state
        self._stream = history[0].stream_id
        self._started_before = (
            frozenset(
                e.event.operation
                for e in history
                if isinstance(e.event, OperationStarted) and e.event.dispatch < state.dispatch
            )
            or _NONE_STARTED
        )
        self._history = _before_dispatch(history) if self._started_before else None
        """The history up to the current dispatch, kept only when a resumed operation may
        need the progress an earlier dispatch left."""
        self._view: ProgressView | None = None
        """The progress as claimed, folded only when a resumed operation needs it."""
        self._dispatch = state.dispatch
        self._worker_id = worker_id
        self._append = append
        self._events = events
        self._slots = slots
        self._clock = clock
        self._settings = settings
        self._commands: list[Command] = []
        self._pending: list[Event] = []
        self._running: dict[str, int] = {}
        self._credits = 0
        self._reserved = reserved
        self._waiting_for_slot = False
        self._progress: dict[str, Progressed] = {}
        self._progress_flushed_at = -math.inf
        self._inbox: list[Message] = []
        self._wakeup: asyncio.Future[None] | None = None
        """Set while the execution waits for its inbox; a posted message completes it."""
        self._tasks = OperationTasks(
            state.agenda_id, post=self._post, runner=runner, slots=slots, clock=clock
        )

    @property
    def state(self) -> AgendaState:
        return self._state

    @property
    def stream_id(self) -> str:
        return self._stream

    async def run(self) -> AgendaState:
        """Execute until the agenda completes; returns its final state."""
        if not (
            is_current(self._state, self._dispatch) and self._state.worker_id == self._worker_id
        ):
            raise LeaseLost(
                f"agenda {self._state.agenda_id} is not dispatched to {self._worker_id}"
            )
        try:
            try:
                if self._state.status is AgendaStatus.DISPATCHED:
                    self._apply(Start(self._dispatch))
                # Between turns the execution waits on a bare future: no coroutine of its
                # own stays suspended (a worker holds thousands of executions).
                while await self._turn():
                    if not self._inbox:
                        await self._next_message(self._progress_due_in())
                    self._receive()
            finally:
                await self._tasks.stop()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._hand_back("the worker stopped before the agenda finished")
            raise
        finally:
            self._release_slots()
        return self._state

    async def _turn(self) -> bool:
        """Plan, record and launch; False once the agenda is final or the lease is lost."""
        self._plan()
        if not await self._flush():
            return False
        self._launch()
        return not self._state.status.is_final

    # --- planning --------------------------------------------------------------------------

    def _apply(self, command: Command) -> None:
        events = decide(self._tentative, command, self._clock.now_ms())
        for event in events:
            self._tentative = evolve(self._tentative, event)
        self._commands.append(command)
        self._pending.extend(events)

    def _plan(self) -> None:
        if self._tentative.status is not AgendaStatus.RUNNING:
            return
        running = len(self._tentative.in_status(OperationStatus.RUNNING))
        ready = startable(self._tentative)
        for name in ready:
            if running >= self._settings.max_parallel_operations or not self._take_slot():
                break
            self._reserved += 1
            running += 1
            self._apply(StartOperation(name, self._dispatch))
        self._return_credits()
        if not running and not ready:
            self._apply(Finish(self._dispatch))

    def _take_slot(self) -> bool:
        if self._credits:
            self._credits -= 1
            return True
        if self._slots.try_acquire():
            return True
        if not self._waiting_for_slot:
            self._waiting_for_slot = True
            self._slots.wait(self._grant_slot)
        return False

    def _grant_slot(self) -> None:
        self._post(_SLOT_GRANTED)

    def _return_credits(self) -> None:
        while self._credits:
            self._credits -= 1
            self._slots.release()

    def _release_slots(self) -> None:
        """Give back every slot this execution holds but no operation uses."""
        self._slots.cancel_wait(self._grant_slot)
        self._credits += sum(1 for message in self._inbox if isinstance(message, SlotGranted))
        self._inbox.clear()
        self._credits += self._reserved
        self._reserved = 0
        self._return_credits()

    # --- recording -------------------------------------------------------------------------

    async def _flush(self) -> bool:
        """Append the turn's events; False when the lease was lost."""
        for _ in range(self._settings.append_attempts):
            if not self._pending:
                return True
            request = AppendRequest(self._stream, self._state.version, list(self._pending))
            # Shielded: once sent, the append commits; knowing whether it did keeps the
            # state true even when the execution is being cancelled.
            with anyio.CancelScope(shield=True):
                result = await self._append(request)
            if isinstance(result, Appended):
                self._state = self._tentative
                self._commands.clear()
                self._pending.clear()
                return True
            if not await self._redecide():
                return False
        log.warning("agenda %s: giving up after repeated conflicts", self._state.agenda_id)
        return False

    async def _catch_up(self) -> None:
        """Fold what others appended since our last known version into the state."""
        newer = await self._events.read_stream(self._stream, after_version=self._state.version)
        for recorded in newer:
            self._state = evolve(self._state, recorded.event)

    async def _redecide(self) -> bool:
        """After a conflict: catch up with the stream and decide the turn again."""
        await self._catch_up()
        commands, self._commands, self._pending = self._commands, [], []
        self._tentative = self._state
        if not is_current(self._state, self._dispatch):
            await self._record_ignored(commands)
            return False
        for command in commands:
            try:
                self._apply(command)
            except InvalidTransition as exc:
                log.info(
                    "agenda %s: dropped %r after a conflict: %s",
                    self._state.agenda_id,
                    command,
                    exc,
                )
                if isinstance(command, StartOperation):
                    self._reserved -= 1
                    self._slots.release()
        return True

    async def _record_ignored(self, commands: list[Command]) -> None:
        """The lease is gone: outcomes we still held are recorded as ignored, not applied."""
        now = self._clock.now_ms()
        ignored = [
            e for c in commands if isinstance(c, RecordOutcome) for e in decide(self._state, c, now)
        ]
        if ignored:
            result = await self._append(AppendRequest(self._stream, self._state.version, ignored))
            if not isinstance(result, Appended):
                log.info(
                    "agenda %s: could not record %d ignored outcomes",
                    self._state.agenda_id,
                    len(ignored),
                )
        log.warning(
            "agenda %s: lease lost (now dispatch %d)", self._state.agenda_id, self._state.dispatch
        )

    async def _hand_back(self, reason: str) -> None:
        """Give the agenda back on shutdown so that another worker resumes it at once."""
        try:
            for _ in range(self._settings.append_attempts):
                if not is_current(self._state, self._dispatch):
                    return
                events = decide(self._state, Reclaim(self._dispatch, reason), self._clock.now_ms())
                request = AppendRequest(self._stream, self._state.version, events)
                if isinstance(await self._append(request), Appended):
                    return
                await self._catch_up()
        except Exception as exc:  # noqa: BLE001 - the lease will expire instead
            log.warning(
                "agenda %s not handed back (%s): another worker resumes it when its lease expires",
                self._state.agenda_id,
                exc,
            )

    # --- running ---------------------------------------------------------------------------

    def _launch(self) -> None:
        running = self._state.in_status(OperationStatus.RUNNING)
        self._running = {op.name: op.attempt for op in running if op.name in self._running}
        for op in running:
            if op.name in self._running:
                continue
            self._running[op.name] = op.attempt
            self._reserved -= 1  # the slot now belongs to the operation's task
            problems, invocation = self._invocation(op)
            if problems:
                self._slots.release()
                message = f"Operation {op.name} has invalid references: {', '.join(problems)}"
                outcome = Failed([diagnostic(message, self._clock.now_ms())])
                self._post(Finished(op.name, op.attempt, outcome))
            else:
                self._tasks.start(invocation)

    def _invocation(self, op: OperationState) -> tuple[list[str], Invocation]:
        resolution = resolve(op.spec.payload, _Context(self._state, op.name))
        problems = [*resolution.missing, *resolution.invalid]
        agenda = self._state.agenda
        invocation = Invocation(
            agenda_id=self._state.agenda_id,
            progress_id=self._state.progress_id,
            customer_id=agenda.customer_id,
            cid=agenda.cid,
            operation=op.spec,
            payload=resolution.value,
            attempt=op.attempt,
            prior_progress=self._prior_progress(op),
        )
        return problems, invocation

    def _prior_progress(self, op: OperationState) -> dict[str, Any] | None:
        """The OperationProgress an earlier dispatch left (``LAST_PROGRESS``), if any."""
        if op.name not in self._started_before:
            return None
        if self._view is None and self._history is not None:
            self._view, self._history = fold_all(self._history), None
        prior = self._view.operations.get(op.name) if self._view else None
        if prior is None:
            return None
        encoded: dict[str, Any] = msgspec.to_builtins(prior)
        return encoded

    # --- waiting ---------------------------------------------------------------------------

    def _post(self, message: Message) -> None:
        self._inbox.append(message)
        if self._wakeup is not None:
            _wake(self._wakeup)

    def _next_message(self, timeout: float) -> asyncio.Future[None]:
        """A future that a posted message completes, or the end of ``timeout``."""
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup = loop.create_future()
        if timeout != math.inf:
            timer = loop.call_later(timeout, _wake, wakeup)
            wakeup.add_done_callback(lambda _: timer.cancel())
        return wakeup

    def _receive(self) -> None:
        self._wakeup = None
        messages, self._inbox = self._inbox, []
        crashed = [m.error for m in messages if isinstance(m, Crashed)]
        for message in messages:
            self._handle(message)
        if crashed:
            raise crashed[0]  # after the batch, so that no slot granted in it is lost
        if self._progress and self._progress_due_in() <= 0:
            self._record_progress()

    def _handle(self, message: Message) -> None:
        if isinstance(message, Finished):
            self._progress.pop(message.name, None)
            self._apply(
                RecordOutcome(message.name, message.attempt, self._dispatch, message.outcome)
            )
        elif isinstance(message, Progressed):
            self._progress[message.name] = message
        elif isinstance(message, SlotGranted):
            self._waiting_for_slot = False
            self._credits += 1

    def _progress_due_in(self) -> float:
        if not self._progress:
            return math.inf
        elapsed = self._clock.monotonic() - self._progress_flushed_at
        return max(0.0, self._settings.progress_interval - elapsed)

    def _record_progress(self) -> None:
        reports, self._progress = self._progress, {}
        self._progress_flushed_at = self._clock.monotonic()
        for p in reports.values():
            self._apply(ReportProgress(p.name, p.attempt, self._dispatch, p.report))


def _wake(wakeup: asyncio.Future[None]) -> None:
    if not wakeup.done():
        wakeup.set_result(None)


def _before_dispatch(history: list[RecordedEvent]) -> list[RecordedEvent]:
    """``history`` up to its last ``agenda.dispatched`` (the current dispatch), without
    what the claim's opening recorded after it."""
    for index in range(len(history) - 1, -1, -1):
        if isinstance(history[index].event, AgendaDispatched):
            return history[: index + 1]
    return history


class _Context(Mapping[str, JSON]):
    """What references resolve against: ``<op>.out`` for each succeeded operation (its
    result, ``{}`` when it returned nothing) and the tokens. Looked up by name on demand, so
    a payload without references costs no copy of every output."""

    __slots__ = ("_name", "_state")

    def __init__(self, state: AgendaState, name: str) -> None:
        self._state = state
        self._name = name

    def __getitem__(self, key: str) -> JSON:
        if key == AGENDA_ID_TOKEN:
            return self._state.agenda_id
        if key == OPERATION_NAME_TOKEN:
            return self._name
        operation = referenced_operation(key)
        op = self._state.operations.get(operation) if operation is not None else None
        if op is None or op.status is not OperationStatus.SUCCEEDED:
            raise KeyError(key)
        return {} if op.result is None else op.result

    def __iter__(self) -> Iterator[str]:
        yield from (output_name(op.name) for op in self._state.in_status(OperationStatus.SUCCEEDED))
        yield from (AGENDA_ID_TOKEN, OPERATION_NAME_TOKEN)

    def __len__(self) -> int:
        return len(self._state.in_status(OperationStatus.SUCCEEDED)) + 2
