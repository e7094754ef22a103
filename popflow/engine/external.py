"""External executors: POP's puller and executor pods driving agendas through popflow.

A POP resource pool runs agendas itself. Its *puller* asks for work (``getAgenda``), launches
an *executor* pod per agenda, and the executor reports the agenda's progress every few
seconds (``updateAgendaProgress``) and, for the ``updateAgenda`` handler, adds operations
(``updateAgenda``). :class:`ExternalExecutors` is the engine side of those three calls.

**Leases, not deletion.** POP deleted a queue message on receipt, so an agenda whose
launcher died was lost (pop-spec §10 item 1). Here handing out is a claim: the agenda is
``agenda.dispatched`` to a worker identity of its own, ``external:<holder>:<uuid>``, and
stays leased while reports keep arriving. One identity per agenda means a report renews
exactly the lease of the agenda it is about; the identity is retired when its agenda
completes. An executor that falls silent loses the agenda to the reclaimer, and the next
``getAgenda`` hands it out again *with* its prior progress, so succeeded operations are not
run again (§5). POP executors report every 5 s but may take minutes to start (pod
scheduling); :meth:`ExternalExecutors.run` therefore keeps each lease alive for
``lease_seconds`` after its hand-out and after every report.

**Reports become commands.** What a report means is decided by the pure functions of
:mod:`popflow.engine.external_reports` (parsing, translation into the commands of
:mod:`popflow.engine.decide`, popflow's judgement of a COMPLETE agenda). This service reads
the agenda, has the report translated and appends the events: one append at the version it
read; a concurrent append makes it read and translate again.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import anyio
import msgspec
from anyio.abc import TaskStatus

from popflow.engine.clock import Clock
from popflow.engine.external_reports import (
    expansion,
    parse_report,
    requested_operations,
    resume_progress,
    translate,
)
from popflow.engine.queue import EXTERNAL_WORKER_PREFIX, ClaimedAgenda, WorkerInfo, WorkQueue
from popflow.engine.state import AgendaState, AgendaStatus, evolve, replay
from popflow.errors import InfrastructureError, InvalidRequest, InvalidTransition, NotFound
from popflow.events.store import Appended, AppendRequest, AppendResult, EventStore, RecordedEvent
from popflow.events.vocabulary import AgendaDispatched, AgendaFailed, AgendaSucceeded, agenda_stream
from popflow.projections.progress import ProgressView, epoch_ms, fold, fold_all

log = logging.getLogger(__name__)

MAX_HAND_OUT: Final = 100
"""Most agendas one ``getAgenda`` hands out (POP's SQS allowed 10)."""
HOLDER_PREFIX: Final = EXTERNAL_WORKER_PREFIX
"""Worker identities of external executors start with this."""
_ATTEMPTS: Final = 5

Append = Callable[[AppendRequest], Awaitable[AppendResult]]


# --- what is handed out --------------------------------------------------------------------


class HandedOut(msgspec.Struct, frozen=True, kw_only=True):
    """One agenda given to an external executor, as ``getAgenda`` returns it."""

    agenda_id: str
    worker_id: str
    """The lease's identity (``external:<holder>:<uuid>``)."""
    agenda: dict[str, Any]
    """The Agenda as POP JSON, generated operations included, ``params.added`` set."""
    progress: dict[str, Any] | None
    """The prior AgendaProgress (with operationProgress) when resuming, else None."""


def agenda_document(state: AgendaState, *, added_ms: int | None = None) -> dict[str, Any]:
    """The agenda as POP JSON: what was submitted, plus the server's fields and every
    operation and parameter added since."""
    document: dict[str, Any] = msgspec.to_builtins(state.agenda)
    document.update(
        id=state.agenda_id,
        progressId=state.progress_id,
        agendaInsight=msgspec.to_builtins(state.insight),
        params=dict(state.params),
    )
    if added_ms is not None:
        document["addedTime"] = added_ms
        document["params"]["added"] = added_ms
    return document


# --- the service -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Known:
    state: AgendaState
    view: ProgressView


class ExternalExecutors:
    """``getAgenda``, ``updateAgendaProgress`` and ``updateAgenda`` for external executors.

    Run :meth:`run` in the engine's task group to keep leases alive for ``lease_seconds``
    after each hand-out and report; without it a lease lasts the reclaimer's timeout.
    """

    def __init__(
        self,
        events: EventStore,
        queue: WorkQueue,
        append: Append,
        clock: Clock,
        lease_seconds: float,
        *,
        renew_interval: float = 2.0,
        cache_size: int = 10_000,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._events = events
        self._queue = queue
        self._append = append
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._renew_interval = renew_interval
        self._cache_size = cache_size
        self._leases: dict[str, float] = {}
        """Worker identity -> monotonic time until which :meth:`renew` keeps it alive."""
        self._known: dict[str, _Known] = {}
        """The latest state and progress of agendas reported on (least recent first)."""

    # --- getAgenda -----------------------------------------------------------------------------

    async def hand_out(self, insight_id: str, count: int | None, *, holder: str) -> list[HandedOut]:
        """Lease up to ``count`` (at most :data:`MAX_HAND_OUT`) ready agendas of the insight."""
        if not insight_id or not insight_id.strip():
            raise InvalidRequest("InsightId is required to getAgenda.")
        if count is None:
            raise InvalidRequest("Count is required to getAgenda.")
        if count < 1:
            raise InvalidRequest("Count must be greater than 0 for getAgenda.")
        handed: list[HandedOut] = []
        while len(handed) < min(count, MAX_HAND_OUT):
            claimed = await self._claim(insight_id, holder.strip() or "anonymous")
            if claimed is None:
                break
            handed.append(await self._handed_out(*claimed))
        return handed

    async def _claim(self, insight_id: str, holder: str) -> tuple[str, ClaimedAgenda] | None:
        # Registered before claiming: a lease without a live worker row counts as expired.
        worker_id = f"{HOLDER_PREFIX}{holder}:{uuid.uuid4().hex}"
        await self._queue.register(WorkerInfo(worker_id, holder, 0))
        claimed: list[ClaimedAgenda] = []
        try:
            claimed = await self._queue.claim(worker_id, 1, insights=[insight_id])
        finally:
            if not claimed:
                with anyio.CancelScope(shield=True):
                    await self._queue.retire(worker_id)
        if not claimed:
            return None
        self._leases[worker_id] = self._clock.monotonic() + self._lease_seconds
        return worker_id, claimed[0]

    async def _handed_out(self, worker_id: str, claimed: ClaimedAgenda) -> HandedOut:
        history = claimed.history
        state = replay(e.event for e in history)
        view = fold_all(history)
        if state is None or view is None:  # pragma: no cover - a claim carries a history
            raise InfrastructureError(f"agenda {claimed.agenda_id} was claimed without history")
        await self._retire_earlier_holders(history, worker_id)
        self._remember(_Known(state, view))
        return HandedOut(
            agenda_id=state.agenda_id,
            worker_id=worker_id,
            agenda=agenda_document(state, added_ms=epoch_ms(history[0].recorded_at)),
            progress=resume_progress(state, view),
        )

    async def _retire_earlier_holders(self, history: Sequence[RecordedEvent], current: str) -> None:
        """Identities whose lease on this agenda lapsed hold nothing: forget them."""
        earlier = {
            e.event.worker_id
            for e in history
            if isinstance(e.event, AgendaDispatched)
            and e.event.worker_id.startswith(HOLDER_PREFIX)
            and e.event.worker_id != current
        }
        for worker_id in earlier:
            self._leases.pop(worker_id, None)
            await self._queue.retire(worker_id)

    # --- updateAgendaProgress --------------------------------------------------------------

    async def report(self, progress: Mapping[str, Any], *, agenda_id: str) -> None:
        """Record a report about ``agenda_id`` (the agenda of the progress id, which the
        progress projection resolves) and renew its holder's lease."""
        parsed = parse_report(progress, self._clock.now_ms())
        for _ in range(_ATTEMPTS):
            known = await self._load(agenda_id)
            worker_id = _external_holder(known.state)
            await self._renew_one(worker_id)
            translation = translate(known.state, known.view, parsed, self._clock.now_ms())
            if not translation.events:
                return
            stream = agenda_stream(agenda_id)
            result = await self._append(
                AppendRequest(stream, known.state.version, translation.events)
            )
            if isinstance(result, Appended):
                if any(isinstance(e, AgendaSucceeded | AgendaFailed) for e in translation.events):
                    await self._release(worker_id, agenda_id)
                return
            conflict = result
        raise conflict.error()

    async def _renew_one(self, worker_id: str) -> None:
        if not await self._queue.heartbeat(worker_id):
            # The stream says this identity holds the agenda: its row must exist again.
            holder = worker_id.removeprefix(HOLDER_PREFIX).rpartition(":")[0]
            await self._queue.register(WorkerInfo(worker_id, holder, 0))
        self._leases[worker_id] = self._clock.monotonic() + self._lease_seconds

    async def _release(self, worker_id: str, agenda_id: str) -> None:
        """The agenda completed: its identity (which held only it) is retired."""
        self._leases.pop(worker_id, None)
        self._known.pop(agenda_id, None)
        await self._queue.retire(worker_id)

    # --- updateAgenda ----------------------------------------------------------------------

    async def add_operations(
        self,
        agenda_id: str,
        operations: Sequence[Mapping[str, Any]] | None,
        params: Mapping[str, Any] | None,
    ) -> AgendaState:
        """Add operations to a running (or waiting) agenda; returns the agenda's new state."""
        new = requested_operations(agenda_id, operations)
        for _ in range(_ATTEMPTS):
            state = (await self._load(agenda_id)).state
            events = expansion(state, new, params)
            if not events:
                return state
            request = AppendRequest(agenda_stream(agenda_id), state.version, events)
            result = await self._append(request)
            if isinstance(result, Appended):
                for event in events:
                    state = evolve(state, event)
                return state
            conflict = result
        raise conflict.error()

    # --- leases ------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew the leases of recent hand-outs and reports until cancelled."""
        task_status.started()
        while True:
            await anyio.sleep(self._renew_interval)
            try:
                await self.renew()
            except InfrastructureError as exc:
                log.warning("could not renew external leases: %s", exc)

    async def renew(self) -> int:
        """Heartbeat every identity handed out or reported on within ``lease_seconds``;
        returns how many are kept alive."""
        now = self._clock.monotonic()
        for worker_id, until in list(self._leases.items()):
            # An identity retired elsewhere (its agenda completed) is not revived.
            if until <= now or not await self._queue.heartbeat(worker_id):
                self._leases.pop(worker_id, None)
        return len(self._leases)

    # --- reading -----------------------------------------------------------------------------

    async def _load(self, agenda_id: str) -> _Known:
        """The agenda's state and progress, read from its stream (only what is new since
        the last time, for agendas reported on recently)."""
        known = self._known.pop(agenda_id, None)
        after = known.state.version if known else 0
        newer = await self._events.read_stream(agenda_stream(agenda_id), after_version=after)
        if known is None:
            state = replay(e.event for e in newer)
            view = fold_all(newer)
            if state is None or view is None:
                raise NotFound(f"no agenda with id {agenda_id}")
            known = _Known(state, view)
        else:
            for recorded in newer:
                known.state = evolve(known.state, recorded.event)
                known.view = fold(known.view, recorded)
        if known.state.status is AgendaStatus.DELETED:
            raise NotFound(f"no agenda with id {agenda_id}")
        self._remember(known)
        return known

    def _remember(self, known: _Known) -> None:
        self._known.pop(known.state.agenda_id, None)
        if len(self._known) >= self._cache_size:
            del self._known[next(iter(self._known))]
        self._known[known.state.agenda_id] = known


def _external_holder(state: AgendaState) -> str:
    """The identity of the external executor holding the agenda; InvalidTransition if none."""
    if state.status.is_final:
        raise InvalidTransition(
            f"agenda {state.agenda_id} is complete ({state.status.value}): "
            "its progress can no longer change"
        )
    worker_id = state.worker_id or ""
    if not state.status.is_leased or not worker_id.startswith(HOLDER_PREFIX):
        holder = f", worker {worker_id}" if worker_id else ""
        raise InvalidTransition(
            f"agenda {state.agenda_id} is not held by an external executor "
            f"(status {state.status.value}{holder}); an agenda whose lease lapsed is "
            "handed out again by getAgenda"
        )
    return worker_id
