"""Statistics: how many agendas are in each state, and how deep each insight's queue is.

These numbers feed ``/metrics`` (:mod:`popflow.api.operations`); they are read from the
projections on demand, never kept in memory, so every process of a deployment reports the
same figures.

An agenda's state is told by the two read models that follow its stream:

* while it is in the work queue (inline with the events, so always current), the queue
  says ``ready``, ``dispatched`` or ``running``;
* once it has left the queue, its AgendaProgress says how it ended: COMPLETE with the
  message ``failed`` is ``failed``, any other COMPLETE is ``succeeded``;
* an agenda outside the queue whose progress is not COMPLETE was held (``doNotRun``),
  deleted before it ran, or ended a moment ago and the progress projection has not caught
  up: the last of its ``agenda.succeeded`` / ``agenda.failed`` / ``agenda.deleted`` events
  decides, and with none of them it is ``held``. Only these few agendas cost a look at
  their events.

A deleted agenda keeps its progress (as in POP): one deleted after it completed goes on
counting under its outcome; ``deleted`` counts those deleted before they ran to the end.
An agenda appears once the progress projection has seen it (or once it is queued).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Protocol

from popflow.events.store import EventStore
from popflow.projections.memory import MemoryProgressStore
from popflow.projections.progress import COMPLETE, AgendaProgress
from popflow.projections.progress import FAILED as FAILED_MESSAGE
from popflow.projections.queue import QueueEntry

HELD, READY, DISPATCHED, RUNNING = "held", "ready", "dispatched", "running"
SUCCEEDED, FAILED, DELETED = "succeeded", "failed", "deleted"

AGENDA_STATES: Final = (HELD, READY, DISPATCHED, RUNNING, SUCCEEDED, FAILED, DELETED)
"""Every state reported, the values of :class:`popflow.engine.state.AgendaStatus`."""

QUEUE_STATUSES: Final = (READY, DISPATCHED, RUNNING)
"""The statuses of an agenda in its insight's queue."""

ENDINGS: Final = {
    "agenda.succeeded": SUCCEEDED,
    "agenda.failed": FAILED,
    "agenda.deleted": DELETED,
}
"""The events that end an agenda's stay in the queue, and the state each one leaves."""


class Statistics(Protocol):
    async def agendas_by_state(self) -> dict[str, int]:
        """The number of agendas in each of :data:`AGENDA_STATES` (zeros included)."""
        ...

    async def queue_depth(self) -> dict[tuple[str, str], int]:
        """Queued agendas by (insight id, status); only pairs with at least one agenda."""
        ...


def state_of(queued: QueueEntry | None, progress: AgendaProgress | None, ending: str | None) -> str:
    """One agenda's state from its queue entry, its progress and its last ending event."""
    if queued is not None:
        return queued.status
    if progress is not None and progress.processing_state == COMPLETE:
        return FAILED if progress.processing_state_message == FAILED_MESSAGE else SUCCEEDED
    return ENDINGS.get(ending or "", HELD)


def settled(queued: QueueEntry | None, progress: AgendaProgress | None) -> bool:
    """Whether the queue or the progress tells the state without a look at the events."""
    return queued is not None or (progress is not None and progress.processing_state == COMPLETE)


def tally(states: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(AGENDA_STATES, 0)
    for state in states:
        counts[state] += 1
    return counts


class QueueEntries(Protocol):
    """What statistics need of a work queue (every WorkQueue has it)."""

    async def entries(self) -> list[QueueEntry]: ...


class MemoryStatistics:
    """Statistics over the in-memory queue, progress rows and event log."""

    def __init__(
        self, queue: QueueEntries, progress: MemoryProgressStore, events: EventStore
    ) -> None:
        self._queue = queue
        self._progress = progress
        self._events = events

    async def agendas_by_state(self) -> dict[str, int]:
        queued = {entry.stream_id: entry for entry in await self._queue.entries()}
        views = dict(self._progress.views)
        states = []
        for stream_id in queued.keys() | views.keys():
            entry, view = queued.get(stream_id), views.get(stream_id)
            progress = None if view is None else view.agenda
            ending = None if settled(entry, progress) else await self._last_ending(stream_id)
            states.append(state_of(entry, progress, ending))
        return tally(states)

    async def _last_ending(self, stream_id: str) -> str | None:
        endings = [e.type for e in await self._events.read_stream(stream_id) if e.type in ENDINGS]
        return endings[-1] if endings else None

    async def queue_depth(self) -> dict[tuple[str, str], int]:
        depth: dict[tuple[str, str], int] = {}
        for entry in await self._queue.entries():
            key = (entry.insight_id, entry.status)
            depth[key] = depth.get(key, 0) + 1
        return depth
