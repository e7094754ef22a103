"""The essentials of each event, in one short line.

An agenda's history is a list of facts (:mod:`popflow.events.vocabulary`); each carries
what matters in a few of its fields. ``popflow history`` prints the event's type beside
the text made here, so the text leaves the type out::

    agenda.submitted      5 operations, customer acme, insight default/default
    operation.started     encode.hd (attempt 1)
    operation.succeeded   probe → {"file":"movie-42.mp4","width":1920,...}
    operation.failed      transcode: unsupported codec
    operations.generated  chunk.1, chunk.2 by expand
    agenda.reclaimed      from host-42-1a2b3c4d: the worker stopped before the agenda finished

An event type added to the vocabulary without a describer here is shown as its fields in
JSON, so a new event never breaks ``popflow history``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from popflow.cli.render import first_message, json_text, percent, plural
from popflow.events.export import event_fields
from popflow.events.vocabulary import (
    AgendaDispatched,
    AgendaFailed,
    AgendaReclaimed,
    AgendaStarted,
    AgendaSubmitted,
    AgendaSucceeded,
    Event,
    OperationFailed,
    OperationOutcomeIgnored,
    OperationProgressed,
    OperationsGenerated,
    OperationStarted,
    OperationSucceeded,
)


def describe(event: Event) -> str:
    """What ``event`` says, without its type."""
    describer = _DESCRIBERS.get(type(event))
    if describer is None:
        return json_text(event_fields(event))
    return describer(event)


def attempt_note(attempt: int) -> str:
    """`` (attempt N)`` for a retry; nothing for a first attempt."""
    return f" (attempt {attempt})" if attempt > 1 else ""


def _submitted(event: AgendaSubmitted) -> str:
    agenda, insight = event.agenda, event.insight
    parts = [
        plural(len(agenda.operations), "operation"),
        f"customer {agenda.customer_id}",
        f"insight {insight.resource_pool_id}/{insight.insight_id}",
    ]
    if event.held:
        parts.append("held (doNotRun)")
    return ", ".join(parts)


def _dispatched(event: AgendaDispatched) -> str:
    return f"to {event.worker_id} (dispatch {event.dispatch})"


def _started(event: AgendaStarted) -> str:
    return f"by {event.worker_id} (dispatch {event.dispatch})"


def _reclaimed(event: AgendaReclaimed) -> str:
    return f"from {event.worker_id}: {event.reason}"


def _operation_started(event: OperationStarted) -> str:
    return f"{event.operation} (attempt {event.attempt})"


def progress_text(event: OperationProgressed) -> str:
    """``encode.hd 40% pass 1 of 2``: the operation, its percent and its message."""
    parts = [event.operation]
    if event.percent_complete is not None:
        parts.append(percent(event.percent_complete))
    if event.message:
        parts.append(event.message)
    return " ".join(parts)


def generated_names(event: OperationsGenerated) -> str:
    return ", ".join(op.name for op in event.operations) or "no operations"


def _succeeded(event: OperationSucceeded) -> str:
    return f"{event.operation}{attempt_note(event.attempt)} → {json_text(event.result)}"


def _failed(event: OperationFailed) -> str:
    reason = first_message(event.diagnostics) or "no diagnostic"
    return f"{event.operation}{attempt_note(event.attempt)}: {reason}"


def _ignored(event: OperationOutcomeIgnored) -> str:
    return f"{event.operation} attempt {event.attempt} {event.outcome}, ignored: {event.reason}"


def _generated(event: OperationsGenerated) -> str:
    return f"{generated_names(event)} by {event.parent}"


def _agenda_succeeded(_event: AgendaSucceeded) -> str:
    return "every operation succeeded"


def _agenda_failed(event: AgendaFailed) -> str:
    return first_message(event.diagnostics) or f"failed: {', '.join(event.failed_operations)}"


_DESCRIBERS: dict[type[Event], Callable[[Any], str]] = {
    AgendaSubmitted: _submitted,
    AgendaDispatched: _dispatched,
    AgendaStarted: _started,
    AgendaReclaimed: _reclaimed,
    OperationStarted: _operation_started,
    OperationProgressed: progress_text,
    OperationSucceeded: _succeeded,
    OperationFailed: _failed,
    OperationOutcomeIgnored: _ignored,
    OperationsGenerated: _generated,
    AgendaSucceeded: _agenda_succeeded,
    AgendaFailed: _agenda_failed,
}
