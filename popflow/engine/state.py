"""An agenda's state, and ``evolve``: how each recorded event changes it.

The state is what decisions need and nothing more: where the agenda is in its lifecycle,
which worker holds it (``dispatch`` numbers each claim and fences stale workers), and per
operation its status, attempts and output. Progress figures for people live in the
projections (:mod:`popflow.projections.progress`).

``evolve`` is a pure fold; replaying a stream from version 1 rebuilds the state at any
version, which is how workers resume and how :func:`state_at` time-travels. The lifecycle::

    (none) --submitted--> READY --dispatched--> DISPATCHED --started--> RUNNING
                 \\--held--> HELD        ^             |                   |   \\
                                        +--reclaimed--+-------------------+    succeeded / failed
                                                                              v
                                                                   SUCCEEDED | FAILED

plus ``agenda.deleted``, which ends an agenda that no worker holds (READY, HELD, SUCCEEDED
or FAILED) in DELETED, final like the other two; and ``agenda.updated``, which changes the
descriptive fields (title, linkId, jobId, params) in any status. Per operation:
PENDING --started--> RUNNING --succeeded/failed--> SUCCEEDED | FAILED, with
RUNNING --(agenda reclaimed)--> PENDING: the next attempt resumes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import msgspec

from popflow.engine.dag import dependencies
from popflow.errors import InvalidTransition
from popflow.events.vocabulary import (
    JSON,
    Agenda,
    AgendaDeleted,
    AgendaDispatched,
    AgendaFailed,
    AgendaInsight,
    AgendaReclaimed,
    AgendaStarted,
    AgendaSubmitted,
    AgendaSucceeded,
    AgendaUpdated,
    Event,
    Operation,
    OperationFailed,
    OperationOutcomeIgnored,
    OperationProgressed,
    OperationsGenerated,
    OperationStarted,
    OperationSucceeded,
    Params,
)


class AgendaStatus(StrEnum):
    READY = "ready"
    HELD = "held"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DELETED = "deleted"

    @property
    def is_final(self) -> bool:
        return self in (AgendaStatus.SUCCEEDED, AgendaStatus.FAILED, AgendaStatus.DELETED)

    @property
    def is_leased(self) -> bool:
        return self in (AgendaStatus.DISPATCHED, AgendaStatus.RUNNING)


class OperationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class OperationState(msgspec.Struct, frozen=True):
    spec: Operation
    depends_on: frozenset[str]
    status: OperationStatus = OperationStatus.PENDING
    attempt: int = 0
    result: JSON = None
    failure: str | None = None
    """The first diagnostic message of the last failed attempt."""
    interrupted: bool = False
    """Its attempt was cut short by a reclaim: the next start resumes the same attempt."""

    @property
    def name(self) -> str:
        return self.spec.name


class AgendaState(msgspec.Struct, frozen=True, kw_only=True):
    agenda_id: str
    progress_id: str
    agenda: Agenda
    insight: AgendaInsight
    maximum_attempts: int
    status: AgendaStatus
    operations: Mapping[str, OperationState]
    params: Params
    version: int = 1
    dispatch: int = 0
    worker_id: str | None = None
    failed: tuple[str, ...] = ()

    def operation(self, name: str) -> OperationState:
        try:
            return self.operations[name]
        except KeyError:
            raise InvalidTransition(f"agenda {self.agenda_id} has no operation [{name}]") from None

    def with_operation(self, op: OperationState, **changes: Any) -> AgendaState:
        operations = dict(self.operations)
        operations[op.name] = msgspec.structs.replace(op, **changes)
        return msgspec.structs.replace(self, operations=MappingProxyType(operations))

    def in_status(self, status: OperationStatus) -> list[OperationState]:
        return [op for op in self.operations.values() if op.status is status]

    def outputs(self) -> dict[str, JSON]:
        """Results of succeeded operations, keyed by operation name."""
        return {op.name: op.result for op in self.in_status(OperationStatus.SUCCEEDED)}


def _operation_states(
    operations: Iterable[Operation], names: Iterable[str]
) -> dict[str, OperationState]:
    known = frozenset(names)
    return {op.name: OperationState(op, dependencies(op, known)) for op in operations}


def _submitted(event: AgendaSubmitted) -> AgendaState:
    ops = event.agenda.operations
    return AgendaState(
        agenda_id=event.agenda_id,
        progress_id=event.progress_id,
        agenda=event.agenda,
        insight=event.insight,
        maximum_attempts=event.maximum_attempts,
        status=AgendaStatus.HELD if event.held else AgendaStatus.READY,
        operations=MappingProxyType(_operation_states(ops, [op.name for op in ops])),
        params=dict(event.agenda.params),
    )


def evolve(state: AgendaState | None, event: Event) -> AgendaState:
    """The state after ``event``. Raises :class:`InvalidTransition` on an impossible history."""
    if state is None:
        if not isinstance(event, AgendaSubmitted):
            raise InvalidTransition(f"a history must start with agenda.submitted, not {event!r}")
        return _submitted(event)
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise InvalidTransition(f"unexpected event {event!r} for agenda {state.agenda_id}")
    evolved: AgendaState = handler(state, event)
    return msgspec.structs.replace(evolved, version=state.version + 1)


def replay(events: Iterable[Event]) -> AgendaState | None:
    state = None
    for event in events:
        state = evolve(state, event)
    return state


def _dispatched(state: AgendaState, event: AgendaDispatched) -> AgendaState:
    return msgspec.structs.replace(
        state, status=AgendaStatus.DISPATCHED, dispatch=event.dispatch, worker_id=event.worker_id
    )


def _started(state: AgendaState, _event: AgendaStarted) -> AgendaState:
    return msgspec.structs.replace(state, status=AgendaStatus.RUNNING)


def _reclaimed(state: AgendaState, _event: AgendaReclaimed) -> AgendaState:
    operations = {
        name: msgspec.structs.replace(op, status=OperationStatus.PENDING, interrupted=True)
        if op.status is OperationStatus.RUNNING
        else op
        for name, op in state.operations.items()
    }
    return msgspec.structs.replace(
        state,
        status=AgendaStatus.READY,
        worker_id=None,
        operations=MappingProxyType(operations),
    )


def _operation_started(state: AgendaState, event: OperationStarted) -> AgendaState:
    op = state.operation(event.operation)
    return state.with_operation(
        op, status=OperationStatus.RUNNING, attempt=event.attempt, interrupted=False
    )


def _operation_progressed(state: AgendaState, _event: OperationProgressed) -> AgendaState:
    return state


def _operation_succeeded(state: AgendaState, event: OperationSucceeded) -> AgendaState:
    op = state.operation(event.operation)
    return state.with_operation(op, status=OperationStatus.SUCCEEDED, result=event.result)


def _operation_failed(state: AgendaState, event: OperationFailed) -> AgendaState:
    op = state.operation(event.operation)
    failed = msgspec.structs.replace(state, failed=(*state.failed, op.name))
    reason = event.diagnostics[0].message if event.diagnostics else None
    return failed.with_operation(op, status=OperationStatus.FAILED, failure=reason)


def _outcome_ignored(state: AgendaState, _event: OperationOutcomeIgnored) -> AgendaState:
    return state


def _generated(state: AgendaState, event: OperationsGenerated) -> AgendaState:
    names = [*state.operations, *(op.name for op in event.operations)]
    added = _operation_states(event.operations, names)
    params = {**state.params, **(event.params or {})}
    agenda = msgspec.structs.replace(
        state.agenda, operations=[*state.agenda.operations, *event.operations]
    )
    return msgspec.structs.replace(
        state,
        agenda=agenda,
        params=params,
        operations=MappingProxyType({**state.operations, **added}),
    )


def _succeeded(state: AgendaState, _event: AgendaSucceeded) -> AgendaState:
    return msgspec.structs.replace(state, status=AgendaStatus.SUCCEEDED, worker_id=None)


def _failed(state: AgendaState, _event: AgendaFailed) -> AgendaState:
    return msgspec.structs.replace(state, status=AgendaStatus.FAILED, worker_id=None)


_AGENDA_FIELDS = {"title": "title", "linkId": "link_id", "jobId": "job_id", "params": "params"}
"""The descriptive fields ``agenda.updated`` may change: POP name -> :class:`Agenda` field."""


def _updated(state: AgendaState, event: AgendaUpdated) -> AgendaState:
    changes = {
        _AGENDA_FIELDS[name]: value
        for name, value in event.changes.items()
        if name in _AGENDA_FIELDS and value is not None
    }
    agenda = msgspec.structs.replace(state.agenda, **changes)
    # New params replace the old ones, generators' additions included, as in the documents.
    params = dict(agenda.params) if "params" in changes else state.params
    return msgspec.structs.replace(state, agenda=agenda, params=params)


def _deleted(state: AgendaState, _event: AgendaDeleted) -> AgendaState:
    return msgspec.structs.replace(state, status=AgendaStatus.DELETED, worker_id=None)


_HANDLERS: dict[type[Event], Any] = {
    AgendaDispatched: _dispatched,
    AgendaStarted: _started,
    AgendaReclaimed: _reclaimed,
    OperationStarted: _operation_started,
    OperationProgressed: _operation_progressed,
    OperationSucceeded: _operation_succeeded,
    OperationFailed: _operation_failed,
    OperationOutcomeIgnored: _outcome_ignored,
    OperationsGenerated: _generated,
    AgendaSucceeded: _succeeded,
    AgendaFailed: _failed,
    AgendaUpdated: _updated,
    AgendaDeleted: _deleted,
}
