"""The work queue as a projection: which agendas wait in which insight, and who holds which.

One entry per agenda that is ready or leased, dropped when the agenda completes or is
deleted. It is maintained *inline*, in the same transaction as the events it follows, so a
worker that claims from it can never see an agenda as ready after it was claimed, and it is
rebuilt from the events like any other projection.

Entries keep the global position of their submission as their place in line; a reclaimed
agenda returns to that place instead of the back of the queue, and counts the re-entry
(Priority insights can boost such agendas). Each entry also keeps what the scheduling
algorithms rank by (:mod:`popflow.engine.scheduling`): the agenda's ``params.priority``
(following ``agenda.updated``), the time it was enqueued, and the time it last became
ready, from which the oldest waiting age of a queue is told.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, Literal, cast

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
    AgendaUpdated,
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
        "agenda.updated",
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
    priority: int = 0
    """``params.priority`` (:data:`DEFAULT_PRIORITY` when absent or not a valid one)."""
    enqueued_at: datetime
    """When the agenda was submitted (the time of its place in line)."""
    ready_since: datetime
    """When it last became ready (submitted, or reclaimed)."""
    reentries: int = 0
    """How many times it came back to the queue after a dispatch (reclaims)."""


PRIORITY_PARAM: Final = "priority"
MIN_PRIORITY: Final = -10
MAX_PRIORITY: Final = 10
DEFAULT_PRIORITY: Final = 0


def agenda_priority(params: Mapping[str, Any]) -> int:
    """The priority an agenda's params give it (the default when absent or invalid).

    The SQL twin is in the scheduling migration: a JSON integer in range, else 0."""
    value = params.get(PRIORITY_PARAM)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if MIN_PRIORITY <= value <= MAX_PRIORITY else DEFAULT_PRIORITY
    return DEFAULT_PRIORITY


def fold(entry: QueueEntry | None, recorded: RecordedEvent) -> QueueEntry | None:
    """The entry after ``recorded``; None when the agenda is not (or no longer) queued."""
    event = recorded.event
    if isinstance(event, AgendaSubmitted):
        return None if event.held else _entered(event, recorded)
    if entry is None:
        return None
    change = _CHANGES.get(type(event))
    return entry if change is None else change(entry, recorded)


def _entered(event: AgendaSubmitted, recorded: RecordedEvent) -> QueueEntry:
    return QueueEntry(
        agenda_id=event.agenda_id,
        stream_id=recorded.stream_id,
        resource_pool_id=event.insight.resource_pool_id,
        insight_id=event.insight.insight_id,
        customer_id=event.agenda.customer_id,
        status="ready",
        enqueued_position=recorded.position,
        priority=agenda_priority(event.agenda.params),
        enqueued_at=recorded.recorded_at,
        ready_since=recorded.recorded_at,
    )


def _dispatched(entry: QueueEntry, recorded: RecordedEvent) -> QueueEntry:
    event = cast(AgendaDispatched, recorded.event)
    return msgspec.structs.replace(
        entry, status="dispatched", dispatch=event.dispatch, worker_id=event.worker_id
    )


def _started(entry: QueueEntry, _recorded: RecordedEvent) -> QueueEntry:
    return msgspec.structs.replace(entry, status="running")


def _reclaimed(entry: QueueEntry, recorded: RecordedEvent) -> QueueEntry:
    return msgspec.structs.replace(
        entry,
        status="ready",
        worker_id=None,
        ready_since=recorded.recorded_at,
        reentries=entry.reentries + 1,
    )


def _updated(entry: QueueEntry, recorded: RecordedEvent) -> QueueEntry:
    """New params replace the old ones whole (as in the agenda document), priority too."""
    params = cast(AgendaUpdated, recorded.event).changes.get("params")
    if not isinstance(params, dict):
        return entry
    return msgspec.structs.replace(entry, priority=agenda_priority(params))


def _left(_entry: QueueEntry, _recorded: RecordedEvent) -> None:
    return None


_CHANGES: dict[type[Event], Callable[[QueueEntry, RecordedEvent], QueueEntry | None]] = {
    AgendaDispatched: _dispatched,
    AgendaStarted: _started,
    AgendaReclaimed: _reclaimed,
    AgendaSucceeded: _left,
    AgendaFailed: _left,
    AgendaDeleted: _left,
    AgendaUpdated: _updated,
}
