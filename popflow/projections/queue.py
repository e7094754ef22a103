"""The work queue as a projection: which agendas wait in which insight, and who holds which.

One entry per agenda that is ready or leased, dropped when the agenda completes or is
deleted. It is maintained *inline*, in the same transaction as the events it follows, so a
worker that claims from it can never see an agenda as ready after it was claimed, and it is
rebuilt from the events like any other projection.

Entries keep the global position of their submission as their place in line; a reclaimed
agenda returns to that place instead of the back of the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from popflow.events.store import RecordedEvent
from popflow.events.vocabulary import (
    AgendaDeleted,
    AgendaDispatched,
    AgendaFailed,
    AgendaReclaimed,
    AgendaStarted,
    AgendaSubmitted,
    AgendaSucceeded,
    Event,
)

QueueStatus = Literal["ready", "dispatched", "running"]

RELEVANT_TYPES = frozenset(
    {
        "agenda.submitted",
        "agenda.dispatched",
        "agenda.started",
        "agenda.reclaimed",
        "agenda.succeeded",
        "agenda.failed",
        "agenda.deleted",
    }
)
"""Event types that change the queue; everything else leaves it untouched."""


class QueueEntry(msgspec.Struct, frozen=True, kw_only=True):
    agenda_id: str
    stream_id: str
    resource_pool_id: str
    insight_id: str
    customer_id: str
    status: QueueStatus
    enqueued_position: int
    dispatch: int = 0
    worker_id: str | None = None


def fold(entry: QueueEntry | None, recorded: RecordedEvent) -> QueueEntry | None:
    """The entry after ``recorded``; None when the agenda is not (or no longer) queued."""
    event = recorded.event
    if isinstance(event, AgendaSubmitted):
        return None if event.held else _entered(event, recorded)
    if entry is None:
        return None
    change = _CHANGES.get(type(event))
    return entry if change is None else change(entry, event)


def _entered(event: AgendaSubmitted, recorded: RecordedEvent) -> QueueEntry:
    return QueueEntry(
        agenda_id=event.agenda_id,
        stream_id=recorded.stream_id,
        resource_pool_id=event.insight.resource_pool_id,
        insight_id=event.insight.insight_id,
        customer_id=event.agenda.customer_id,
        status="ready",
        enqueued_position=recorded.position,
    )


def _dispatched(entry: QueueEntry, event: AgendaDispatched) -> QueueEntry:
    return msgspec.structs.replace(
        entry, status="dispatched", dispatch=event.dispatch, worker_id=event.worker_id
    )


def _started(entry: QueueEntry, _event: AgendaStarted) -> QueueEntry:
    return msgspec.structs.replace(entry, status="running")


def _reclaimed(entry: QueueEntry, _event: AgendaReclaimed) -> QueueEntry:
    return msgspec.structs.replace(entry, status="ready", worker_id=None)


def _left(_entry: QueueEntry, _event: AgendaSucceeded | AgendaFailed | AgendaDeleted) -> None:
    return None


_CHANGES: dict[type[Event], Callable[[QueueEntry, Any], QueueEntry | None]] = {
    AgendaDispatched: _dispatched,
    AgendaStarted: _started,
    AgendaReclaimed: _reclaimed,
    AgendaSucceeded: _left,
    AgendaFailed: _left,
    AgendaDeleted: _left,
}
