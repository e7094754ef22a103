"""AgendaProgress and OperationProgress: the POP read models, as a pure fold over events.

These are the objects POP clients poll (pop-spec §1.6, §1.7), with the original field names
and vocabulary: ``processingState`` WAITING / EXECUTING / COMPLETE, messages ``pending`` /
``Running Operations`` / ``succeeded`` / ``failed``, times as epoch milliseconds,
``resultPayload`` as JSON *text*, OperationProgress ids ``<agendaProgressId>-<name>``.

:func:`fold` turns one recorded event into the next :class:`ProgressView`; the projection
runner stores the result, the executor uses it to hand a resumed operation its previous
progress (``LAST_PROGRESS``), and ``popflow run`` uses it to draw live progress. Where the
original was wrong, this fold is not: ``attemptCount`` and ``attemptTime`` are maintained,
a COMPLETE agenda is at 100 percent whether it succeeded or failed, and finished operations
count fully in the roll-up (pop-spec §10 items 9 and 21).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import msgspec

from popflow.events.store import RecordedEvent
from popflow.events.vocabulary import (
    JSON,
    AgendaDispatched,
    AgendaFailed,
    AgendaInsight,
    AgendaReclaimed,
    AgendaStarted,
    AgendaSubmitted,
    AgendaSucceeded,
    AgendaUpdated,
    DiagnosticEvent,
    Event,
    Operation,
    OperationFailed,
    OperationOutcomeIgnored,
    OperationProgressed,
    OperationsGenerated,
    OperationStarted,
    OperationSucceeded,
)

WAITING, EXECUTING, COMPLETE = "WAITING", "EXECUTING", "COMPLETE"
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
RUNNING_OPERATIONS = "Running Operations"


# The progress structs are untracked by the cycle collector (gc=False): they never form
# cycles, and a rebuild holds hundreds of thousands of them, which made the collector's
# full passes a fifth of its time.


class OperationProgress(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True, gc=False
):
    id: str
    agenda_progress_id: str
    customer_id: str
    operation: str
    processing_state: str
    percent_complete: float
    attempt_count: int
    params: dict[str, Any]
    diagnostic_events: list[DiagnosticEvent]
    added_time: int
    updated_time: int
    processing_state_message: str | None = None
    cid: str | None = None
    attempt_time: int | None = None
    started_time: int | None = None
    completed_time: int | None = None
    result_payload: str | None = None


class AgendaProgress(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True, gc=False
):
    id: str
    agenda_id: str
    customer_id: str
    processing_state: str
    processing_state_message: str
    percent_complete: float
    attempts_completed: int
    maximum_attempts: int
    params: dict[str, Any]
    diagnostic_events: list[DiagnosticEvent]
    added_time: int
    updated_time: int
    cid: str | None = None
    link_id: str | None = None
    external_id: str | None = None
    agenda_insight: AgendaInsight | None = None
    started_time: int | None = None
    completed_time: int | None = None
    operation_progress: list[OperationProgress] | None = None
    """Joined on read; None in the stored row."""


class ProgressView(msgspec.Struct, frozen=True, gc=False):
    """One agenda's progress: the agenda row and its operation rows, by operation name."""

    agenda: AgendaProgress
    operations: Mapping[str, OperationProgress]

    def joined(self) -> AgendaProgress:
        """The AgendaProgress with its operationProgress list, as POP serves it."""
        return msgspec.structs.replace(
            self.agenda, operation_progress=list(self.operations.values())
        )


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=1024)
def epoch_ms(moment: datetime) -> int:
    """Whole milliseconds since 1970, rounded down in integer arithmetic: a float product
    can land one millisecond short, and the SQL folds, which compute it exactly, would then
    disagree with this one. Cached: the events of one append share their time."""
    return (moment - _UNIX_EPOCH) // timedelta(milliseconds=1)


def operation_progress_id(agenda_progress_id: str, operation: str) -> str:
    return f"{agenda_progress_id}-{operation}"


def fold(view: ProgressView | None, recorded: RecordedEvent) -> ProgressView:
    """The progress after ``recorded``."""
    event, now = recorded.event, epoch_ms(recorded.recorded_at)
    if view is None:
        if not isinstance(event, AgendaSubmitted):
            raise ValueError(f"progress must start with agenda.submitted, got {recorded.type}")
        return _submitted(event, now)
    handler = _AGENDA_HANDLERS.get(type(event))
    if handler is not None:
        return _rolled_up(handler(view, event, now))
    op_handler = _OPERATION_HANDLERS.get(type(event))
    if op_handler is None:
        return view
    name = getattr(event, "operation")  # noqa: B009 - every operation event has one
    current = view.operations[name]
    updated = op_handler(current, event, now)
    view = _with_operation(view, updated, now)
    # The roll-up is a function of the shares: when this one did not move (a start, say),
    # recomputing it would give the very same number.
    return view if _share(updated) == _share(current) else _rolled_up(view)


def fold_all(
    events: Iterable[RecordedEvent], view: ProgressView | None = None
) -> ProgressView | None:
    for recorded in events:
        view = fold(view, recorded)
    return view


def result_text(result: JSON) -> str:
    """How POP carries an operation's output: as JSON text (null output becomes ``{}``)."""
    return msgspec.json.encode({} if result is None else result).decode()


# --- agenda events --------------------------------------------------------------------------


def _submitted(event: AgendaSubmitted, now: int) -> ProgressView:
    agenda = event.agenda
    progress = AgendaProgress(
        id=event.progress_id,
        agenda_id=event.agenda_id,
        customer_id=agenda.customer_id,
        cid=agenda.cid,
        link_id=agenda.link_id,
        external_id=_external_id(agenda.params),
        processing_state=WAITING,
        processing_state_message=PENDING,
        percent_complete=0.0,
        attempts_completed=0,
        maximum_attempts=event.maximum_attempts,
        params=dict(agenda.params),
        agenda_insight=event.insight,
        diagnostic_events=[],
        added_time=now,
        updated_time=now,
    )
    operations = {op.name: _new_operation(progress, op, now) for op in agenda.operations}
    return ProgressView(progress, MappingProxyType(operations))


def _external_id(params: Mapping[str, Any]) -> str | None:
    external = params.get("externalId")
    return None if external is None else str(external)


def _new_operation(agenda: AgendaProgress, op: Operation, now: int) -> OperationProgress:
    return OperationProgress(
        id=operation_progress_id(agenda.id, op.name),
        agenda_progress_id=agenda.id,
        customer_id=agenda.customer_id,
        cid=agenda.cid,
        operation=op.name,
        processing_state=WAITING,
        processing_state_message=PENDING,
        percent_complete=0.0,
        attempt_count=0,
        params=dict(op.params),
        diagnostic_events=[],
        added_time=now,
        updated_time=now,
    )


def _agenda(view: ProgressView, now: int, **changes: Any) -> ProgressView:
    agenda = msgspec.structs.replace(view.agenda, updated_time=now, **changes)
    return msgspec.structs.replace(view, agenda=agenda)


def _dispatched(view: ProgressView, _event: AgendaDispatched, now: int) -> ProgressView:
    return _agenda(view, now)


def _started(view: ProgressView, _event: AgendaStarted, now: int) -> ProgressView:
    return _agenda(
        view,
        now,
        processing_state=EXECUTING,
        processing_state_message=RUNNING_OPERATIONS,
        started_time=now,
        completed_time=None,
    )


def _reclaimed(view: ProgressView, event: AgendaReclaimed, now: int) -> ProgressView:
    note = DiagnosticEvent(
        message=f"Agenda reclaimed from worker {event.worker_id}: {event.reason}", time=now
    )
    interrupted = {
        name: msgspec.structs.replace(
            op, processing_state=WAITING, processing_state_message=PENDING, updated_time=now
        )
        for name, op in view.operations.items()
        if op.processing_state == EXECUTING
    }
    view = msgspec.structs.replace(
        view, operations=MappingProxyType({**view.operations, **interrupted})
    )
    return _agenda(
        view,
        now,
        processing_state=WAITING,
        processing_state_message=PENDING,
        diagnostic_events=[*view.agenda.diagnostic_events, note],
    )


def _generated(view: ProgressView, event: OperationsGenerated, now: int) -> ProgressView:
    added = {op.name: _new_operation(view.agenda, op, now) for op in event.operations}
    view = msgspec.structs.replace(view, operations=MappingProxyType({**view.operations, **added}))
    return _agenda(view, now, params={**view.agenda.params, **(event.params or {})})


def _updated(view: ProgressView, event: AgendaUpdated, now: int) -> ProgressView:
    # Only what progress mirrors of the agenda: its linkId and params (and the externalId
    # they carry). Nulls keep the stored values, as in every sparse merge.
    changes: dict[str, Any] = {}
    if (link_id := event.changes.get("linkId")) is not None:
        changes["link_id"] = str(link_id)
    if isinstance(params := event.changes.get("params"), dict):
        changes.update(params=dict(params), external_id=_external_id(params))
    return _agenda(view, now, **changes)


def _completed(
    view: ProgressView, message: str, now: int, extra: list[DiagnosticEvent]
) -> ProgressView:
    return _agenda(
        view,
        now,
        processing_state=COMPLETE,
        processing_state_message=message,
        completed_time=now,
        attempts_completed=view.agenda.attempts_completed + 1,
        diagnostic_events=[*view.agenda.diagnostic_events, *extra],
    )


def _succeeded(view: ProgressView, _event: AgendaSucceeded, now: int) -> ProgressView:
    return _completed(view, SUCCEEDED, now, [])


def _failed(view: ProgressView, event: AgendaFailed, now: int) -> ProgressView:
    return _completed(view, FAILED, now, list(event.diagnostics))


def _rolled_up(view: ProgressView) -> ProgressView:
    if view.agenda.processing_state == COMPLETE:
        percent = 100.0
    else:
        shares = list(map(_share, view.operations.values()))
        percent = sum(shares) / len(shares) if shares else 0.0
    if percent == view.agenda.percent_complete:
        return view
    return msgspec.structs.replace(
        view, agenda=msgspec.structs.replace(view.agenda, percent_complete=percent)
    )


def _share(op: OperationProgress) -> float:
    state = op.processing_state
    if state == COMPLETE:
        return 100.0
    if state == EXECUTING:
        return min(100.0, op.percent_complete)
    return 0.0


# --- operation events ------------------------------------------------------------------------


def _with_operation(view: ProgressView, op: OperationProgress, now: int) -> ProgressView:
    operations = MappingProxyType({**view.operations, op.operation: op})
    return msgspec.structs.replace(
        view, operations=operations, agenda=msgspec.structs.replace(view.agenda, updated_time=now)
    )


def _op_started(op: OperationProgress, event: OperationStarted, now: int) -> OperationProgress:
    return msgspec.structs.replace(
        op,
        processing_state=EXECUTING,
        processing_state_message=None,
        percent_complete=0.0,
        attempt_count=event.attempt,
        attempt_time=now,
        started_time=now,
        completed_time=None,
        updated_time=now,
    )


def _op_progressed(
    op: OperationProgress, event: OperationProgressed, now: int
) -> OperationProgress:
    percent = op.percent_complete if event.percent_complete is None else event.percent_complete
    return msgspec.structs.replace(
        op,
        percent_complete=max(0.0, min(100.0, percent)),
        processing_state_message=event.message or op.processing_state_message,
        params={**op.params, **(event.params or {})},
        updated_time=now,
    )


def _op_succeeded(op: OperationProgress, event: OperationSucceeded, now: int) -> OperationProgress:
    return msgspec.structs.replace(
        op,
        processing_state=COMPLETE,
        processing_state_message=SUCCEEDED,
        percent_complete=100.0,
        completed_time=now,
        result_payload=result_text(event.result),
        params={**op.params, **(event.params or {})},
        updated_time=now,
    )


def _op_failed(op: OperationProgress, event: OperationFailed, now: int) -> OperationProgress:
    return msgspec.structs.replace(
        op,
        processing_state=COMPLETE,
        processing_state_message=FAILED,
        completed_time=now,
        diagnostic_events=[*op.diagnostic_events, *event.diagnostics],
        params={**op.params, **(event.params or {})},
        updated_time=now,
    )


def _op_ignored(
    op: OperationProgress, _event: OperationOutcomeIgnored, _now: int
) -> OperationProgress:
    return op


_AGENDA_HANDLERS: dict[type[Event], Any] = {
    AgendaDispatched: _dispatched,
    AgendaStarted: _started,
    AgendaReclaimed: _reclaimed,
    OperationsGenerated: _generated,
    AgendaSucceeded: _succeeded,
    AgendaFailed: _failed,
    AgendaUpdated: _updated,
    # agenda.deleted is absent on purpose: a deleted agenda's progress stays, as in POP.
}

_OPERATION_HANDLERS: dict[type[Event], Any] = {
    OperationStarted: _op_started,
    OperationProgressed: _op_progressed,
    OperationSucceeded: _op_succeeded,
    OperationFailed: _op_failed,
    OperationOutcomeIgnored: _op_ignored,
}
