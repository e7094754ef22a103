"""``decide``: which events a command produces, given the agenda's state. Pure.

Every change to an agenda goes through here: a command (claim it, start it, start an
operation, record an outcome, finish, reclaim) and the current state go in, the events to
append come out, or :class:`~popflow.errors.InvalidTransition` when the command does not
apply. No IO, no clock (the caller passes ``now_ms``), no randomness: the business rules
are table-tested in microseconds, and the executor, the reclaimer and the API all share
them.

Two rules carry the engine's guarantees:

* **Fencing.** Commands from a worker name the ``dispatch`` they hold. After a reclaim the
  agenda has a new dispatch, so an outcome from the old worker is recorded as
  ``operation.outcome-ignored`` and never applied.
* **Generators run once.** A generator's injected operations are recorded in the same
  append as its success, so a resumed agenda sees them as already injected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from popflow.engine.agenda import param_int
from popflow.engine.generators import generated_operations
from popflow.engine.runner import Failed, Outcome, ProgressReport, Succeeded
from popflow.engine.state import AgendaState, AgendaStatus, OperationState, OperationStatus
from popflow.errors import InvalidTransition
from popflow.events.vocabulary import (
    Agenda,
    AgendaDispatched,
    AgendaFailed,
    AgendaInsight,
    AgendaReclaimed,
    AgendaStarted,
    AgendaSubmitted,
    AgendaSucceeded,
    DiagnosticEvent,
    Event,
    OperationFailed,
    OperationOutcomeIgnored,
    OperationProgressed,
    OperationStarted,
    OperationSucceeded,
)

DEFAULT_MAXIMUM_ATTEMPTS = 3
MAXIMUM_ATTEMPTS_CAP = 20


@dataclasses.dataclass(frozen=True)
class Dispatch:
    """A worker claims a ready agenda."""

    worker_id: str


@dataclasses.dataclass(frozen=True)
class Start:
    """The worker holding ``dispatch`` begins executing."""

    dispatch: int


@dataclasses.dataclass(frozen=True)
class StartOperation:
    name: str
    dispatch: int


@dataclasses.dataclass(frozen=True)
class ReportProgress:
    name: str
    attempt: int
    dispatch: int
    report: ProgressReport


@dataclasses.dataclass(frozen=True)
class RecordOutcome:
    name: str
    attempt: int
    dispatch: int
    outcome: Outcome


@dataclasses.dataclass(frozen=True)
class Finish:
    """Conclude the run: succeeded, failed, or stuck (a dependency deadlock)."""

    dispatch: int


@dataclasses.dataclass(frozen=True)
class Reclaim:
    """Take the agenda back from the holder of ``dispatch`` and make it ready again."""

    dispatch: int
    reason: str


Command = Dispatch | Start | StartOperation | ReportProgress | RecordOutcome | Finish | Reclaim


def submitted(
    agenda: Agenda,
    *,
    agenda_id: str,
    progress_id: str,
    insight: AgendaInsight,
    idempotency_key: str | None = None,
) -> AgendaSubmitted:
    """The first event of a validated agenda's history."""
    attempts = param_int(agenda.params, "maximumAttempts", DEFAULT_MAXIMUM_ATTEMPTS)
    return AgendaSubmitted(
        agenda_id=agenda_id,
        progress_id=progress_id,
        agenda=agenda,
        insight=insight,
        maximum_attempts=min(max(attempts, 1), MAXIMUM_ATTEMPTS_CAP),
        held="doNotRun" in agenda.params,
        idempotency_key=idempotency_key,
    )


def decide(state: AgendaState, command: Command, now_ms: int) -> list[Event]:  # noqa: PLR0911 - one case per command
    """The events ``command`` produces in ``state``."""
    match command:
        case Dispatch(worker_id):
            _require(state, state.status is AgendaStatus.READY, "be dispatched")
            return [AgendaDispatched(worker_id=worker_id, dispatch=state.dispatch + 1)]
        case Start(dispatch):
            _require_holder(state, dispatch, AgendaStatus.DISPATCHED, "start")
            return [AgendaStarted(worker_id=state.worker_id or "", dispatch=dispatch)]
        case StartOperation(name, dispatch):
            return _start_operation(state, name, dispatch)
        case ReportProgress(name, attempt, dispatch, report):
            return _progress(state, name, attempt, dispatch, report)
        case RecordOutcome():
            return _record_outcome(state, command, now_ms)
        case Finish(dispatch):
            return _finish(state, dispatch, now_ms)
        case Reclaim(dispatch, reason):
            _require(state, state.status.is_leased and state.dispatch == dispatch, "be reclaimed")
            return [
                AgendaReclaimed(worker_id=state.worker_id or "", dispatch=dispatch, reason=reason)
            ]
    raise InvalidTransition(f"unknown command {command!r}")  # pragma: no cover


def startable(state: AgendaState) -> list[str]:
    """Operations that may start now: pending, every dependency succeeded, no failure yet."""
    if state.status is not AgendaStatus.RUNNING or state.failed:
        return []
    succeeded = {op.name for op in state.in_status(OperationStatus.SUCCEEDED)}
    return [
        op.name for op in state.in_status(OperationStatus.PENDING) if op.depends_on <= succeeded
    ]


def can_start(state: AgendaState, name: str) -> bool:
    """Whether one operation may start now (the rule of :func:`startable`, for one name)."""
    op = state.operations.get(name)
    if op is None or op.status is not OperationStatus.PENDING:
        return False
    if state.status is not AgendaStatus.RUNNING or state.failed:
        return False
    return all(_has_succeeded(state, dependency) for dependency in op.depends_on)


def _has_succeeded(state: AgendaState, name: str) -> bool:
    dependency = state.operations.get(name)
    return dependency is not None and dependency.status is OperationStatus.SUCCEEDED


def is_current(state: AgendaState, dispatch: int) -> bool:
    """Whether ``dispatch`` still holds the agenda."""
    return state.status.is_leased and state.dispatch == dispatch


def _require(state: AgendaState, condition: bool, action: str) -> None:
    if not condition:
        raise InvalidTransition(
            f"agenda {state.agenda_id} is {state.status.value} (dispatch {state.dispatch}) "
            f"and cannot {action}"
        )


def _require_holder(state: AgendaState, dispatch: int, status: AgendaStatus, action: str) -> None:
    _require(state, state.status is status and state.dispatch == dispatch, action)


def _start_operation(state: AgendaState, name: str, dispatch: int) -> list[Event]:
    _require_holder(state, dispatch, AgendaStatus.RUNNING, f"start operation [{name}]")
    if not can_start(state, name):
        raise InvalidTransition(f"operation [{name}] of agenda {state.agenda_id} cannot start now")
    op = state.operation(name)
    # An interrupted attempt is resumed (same number, so a pod can be adopted), not retried.
    attempt = op.attempt if op.interrupted else op.attempt + 1
    return [OperationStarted(operation=name, attempt=attempt, dispatch=dispatch)]


def _progress(
    state: AgendaState, name: str, attempt: int, dispatch: int, report: ProgressReport
) -> list[Event]:
    op = state.operations.get(name)
    if not is_current(state, dispatch) or op is None or op.attempt != attempt:
        return []  # progress of an attempt that no longer counts is dropped
    if op.status is not OperationStatus.RUNNING:
        return []
    return [
        OperationProgressed(
            operation=name,
            attempt=attempt,
            percent_complete=report.percent_complete,
            message=report.message,
            params=report.params,
        )
    ]


def _record_outcome(state: AgendaState, command: RecordOutcome, now_ms: int) -> list[Event]:
    op = state.operation(command.name)
    verdict: Literal["succeeded", "failed"] = (
        "succeeded" if isinstance(command.outcome, Succeeded) else "failed"
    )
    stale = _staleness(state, command)
    if stale:
        return [
            OperationOutcomeIgnored(
                operation=command.name,
                attempt=command.attempt,
                dispatch=command.dispatch,
                outcome=verdict,
                reason=stale,
            )
        ]
    if isinstance(command.outcome, Failed):
        return [_failed(command.name, op.attempt, command.outcome)]
    return _succeeded(state, command.name, op.attempt, command.outcome, now_ms)


def _staleness(state: AgendaState, command: RecordOutcome) -> str | None:
    if not is_current(state, command.dispatch):
        return f"dispatch {command.dispatch} no longer holds the agenda (now {state.dispatch})"
    op = state.operation(command.name)
    if op.status is not OperationStatus.RUNNING or op.attempt != command.attempt:
        return f"attempt {command.attempt} is not running (operation is {op.status.value})"
    return None


def _failed(name: str, attempt: int, outcome: Failed) -> OperationFailed:
    return OperationFailed(
        operation=name,
        attempt=attempt,
        diagnostics=list(outcome.diagnostics),
        params=outcome.params,
    )


def _succeeded(
    state: AgendaState, name: str, attempt: int, outcome: Succeeded, now_ms: int
) -> list[Event]:
    generated = generated_operations(state, name, outcome.result, now_ms)
    if isinstance(generated, Failed):
        return [_failed(name, attempt, generated)]
    success = OperationSucceeded(
        operation=name, attempt=attempt, result=outcome.result, params=outcome.params
    )
    return [success] if generated is None else [success, generated]


def _finish(state: AgendaState, dispatch: int, now_ms: int) -> list[Event]:
    _require_holder(state, dispatch, AgendaStatus.RUNNING, "finish")
    running = state.in_status(OperationStatus.RUNNING)
    if running:
        names = ", ".join(op.name for op in running)
        raise InvalidTransition(f"agenda {state.agenda_id} still runs operations: {names}")
    if state.failed:
        return [_agenda_failed(state, dispatch, now_ms)]
    pending = state.in_status(OperationStatus.PENDING)
    if not pending:
        return [AgendaSucceeded(dispatch=dispatch)]
    if startable(state):
        raise InvalidTransition(f"agenda {state.agenda_id} has operations ready to start")
    return [_deadlock(dispatch, pending, now_ms)]


def _agenda_failed(state: AgendaState, dispatch: int, now_ms: int) -> AgendaFailed:
    reasons = {name: state.operation(name).failure or "no reason given" for name in state.failed}
    diagnostics = [
        DiagnosticEvent(message=f"Operation [{name}] failed: {reason}", time=now_ms)
        for name, reason in reasons.items()
    ]
    return AgendaFailed(
        dispatch=dispatch, failed_operations=list(state.failed), diagnostics=diagnostics
    )


def _deadlock(dispatch: int, pending: Sequence[OperationState], now_ms: int) -> AgendaFailed:
    waits = "; ".join(f"{op.name} waits for {', '.join(sorted(op.depends_on))}" for op in pending)
    message = f"Agenda operation deadlock has occurred: {waits}"
    return AgendaFailed(
        dispatch=dispatch,
        failed_operations=[],
        diagnostics=[DiagnosticEvent(message=message, time=now_ms)],
    )


__all__ = [
    "Command",
    "Dispatch",
    "Finish",
    "Reclaim",
    "RecordOutcome",
    "ReportProgress",
    "Start",
    "StartOperation",
    "decide",
    "is_current",
    "startable",
    "submitted",
]
