"""The event vocabulary: every fact popflow records about an agenda.

An agenda's history is a stream of these events, one stream per agenda. Each event is a
frozen msgspec Struct with an explicit dotted tag; the tag is what is stored beside the
event and it is never renamed. New fields are added with defaults, so that every stored
history keeps loading; a breaking change becomes a new tag plus an upcaster
(see :mod:`popflow.events.codec`).

The value types the events carry (the submitted :class:`Agenda`, its :class:`Operation`
list, :class:`DiagnosticEvent`) use the original POP field names on the wire
(``customerId``, ``linkId``, ``progressId``...), so stored histories read like POP JSON.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import msgspec

JSON = Any
"""Any JSON value, as msgspec decodes it (dict, list, str, int, float, bool or None)."""

Params = dict[str, Any]


class Operation(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """One step of an agenda: ``type`` selects the handler, ``payload`` is its input."""

    name: str
    type: str
    payload: JSON = None
    params: Params = msgspec.field(default_factory=dict)
    id: str | None = None


class AgendaInsight(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """The queue (insight) of a resource pool that an agenda was routed to."""

    resource_pool_id: str
    insight_id: str


class Agenda(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """The workflow a customer submits: a DAG of operations plus correlation fields.

    Server-assigned fields (``id``, ``progressId``, ``agendaInsight``, times) are not part of
    this value: they live on :class:`AgendaSubmitted`.
    """

    customer_id: str
    operations: list[Operation]
    params: Params = msgspec.field(default_factory=dict)
    cid: str | None = None
    link_id: str | None = None
    job_id: str | None = None
    title: str | None = None


class DiagnosticEvent(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """Why something failed, as POP reports it (``time`` is epoch milliseconds)."""

    message: str
    time: int
    status_code: str | None = None
    stack_trace: str | None = None
    payload: JSON = None


class Event(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True, tag_field="type"):
    """Base of every recorded fact. Subclasses set ``tag=`` to their stable dotted name."""


# --- submission and dispatch ---------------------------------------------------------------


class AgendaSubmitted(Event, frozen=True, tag="agenda.submitted"):
    """A validated agenda was accepted and routed; it is ready unless ``held``."""

    agenda_id: str
    progress_id: str
    agenda: Agenda
    insight: AgendaInsight
    maximum_attempts: int
    held: bool = False
    """True when ``params.doNotRun`` was given: recorded, never scheduled."""
    idempotency_key: str | None = None


class AgendaDispatched(Event, frozen=True, tag="agenda.dispatched"):
    """A worker claimed the agenda. ``dispatch`` counts claims; it fences stale workers."""

    worker_id: str
    dispatch: int


class AgendaStarted(Event, frozen=True, tag="agenda.started"):
    """The worker holding ``dispatch`` began executing operations."""

    worker_id: str
    dispatch: int


class AgendaReclaimed(Event, frozen=True, tag="agenda.reclaimed"):
    """The holder of ``dispatch`` lost its lease (died, stalled or shut down): ready again."""

    worker_id: str
    dispatch: int
    reason: str


# --- operations ----------------------------------------------------------------------------


class OperationStarted(Event, frozen=True, tag="operation.started"):
    """Attempt ``attempt`` of an operation began under ``dispatch``."""

    operation: str
    attempt: int
    dispatch: int


class OperationProgressed(Event, frozen=True, tag="operation.progressed"):
    """A running attempt reported progress (coalesced by the executor)."""

    operation: str
    attempt: int
    percent_complete: float | None = None
    message: str | None = None
    params: Params | None = None


class OperationSucceeded(Event, frozen=True, tag="operation.succeeded"):
    """The attempt produced ``result``: later operations see it as ``<name>.out``."""

    operation: str
    attempt: int
    result: JSON = None
    params: Params | None = None


class OperationFailed(Event, frozen=True, tag="operation.failed"):
    """The attempt failed; ``diagnostics`` say why."""

    operation: str
    attempt: int
    diagnostics: list[DiagnosticEvent] = msgspec.field(default_factory=list)
    params: Params | None = None


class OperationOutcomeIgnored(Event, frozen=True, tag="operation.outcome-ignored"):
    """An outcome arrived for an attempt that no longer counts (a lost lease): not applied."""

    operation: str
    attempt: int
    dispatch: int
    outcome: Literal["succeeded", "failed"]
    reason: str


class OperationsGenerated(Event, frozen=True, tag="operations.generated"):
    """A generator operation injected ``operations`` into the agenda (exactly once)."""

    parent: str
    operations: list[Operation]
    params: Params | None = None


# --- completion ----------------------------------------------------------------------------


class AgendaSucceeded(Event, frozen=True, tag="agenda.succeeded"):
    """Every operation succeeded."""

    dispatch: int


class AgendaFailed(Event, frozen=True, tag="agenda.failed"):
    """The agenda stopped: an operation failed or the agenda could not continue."""

    dispatch: int
    failed_operations: list[str] = msgspec.field(default_factory=list)
    diagnostics: list[DiagnosticEvent] = msgspec.field(default_factory=list)


# --- changes made through the API ----------------------------------------------------------


class AgendaUpdated(Event, frozen=True, tag="agenda.updated"):
    """Descriptive fields changed (``title``, ``linkId``, ``jobId``, ``params``): a sparse
    merge, so fields absent from ``changes`` keep their values. ``time`` is epoch ms."""

    changes: dict[str, Any]
    time: int


class AgendaDeleted(Event, frozen=True, tag="agenda.deleted"):
    """The agenda was deleted while no worker held it: it leaves its queue for good. Its
    progress stays readable, as in POP."""

    time: int


AgendaEvent = (
    AgendaSubmitted
    | AgendaDispatched
    | AgendaStarted
    | AgendaReclaimed
    | OperationStarted
    | OperationProgressed
    | OperationSucceeded
    | OperationFailed
    | OperationOutcomeIgnored
    | OperationsGenerated
    | AgendaSucceeded
    | AgendaFailed
    | AgendaUpdated
    | AgendaDeleted
)


# --- the objects that configure popflow ----------------------------------------------------
#
# Customers, resource pools, insights and agenda templates each live in a stream of their own
# (``<kind>-<id>``, see :func:`object_stream`). Their documents are POP JSON, kept verbatim.


class ObjectCreated(Event, frozen=True, tag="object.created"):
    """An object of ``kind`` was created with ``document`` (its POP JSON, ``id`` included)."""

    kind: str
    object_id: str
    customer_id: str
    document: dict[str, Any]
    time: int


class ObjectUpdated(Event, frozen=True, tag="object.updated"):
    """A sparse merge: the fields in ``changes`` replace the stored ones, others stay."""

    kind: str
    object_id: str
    changes: dict[str, Any]
    time: int


class ObjectDeleted(Event, frozen=True, tag="object.deleted"):
    kind: str
    object_id: str
    time: int


ObjectEvent = ObjectCreated | ObjectUpdated | ObjectDeleted

EVENT_TYPES: dict[str, type[Event]] = {
    str(cls.__struct_config__.tag): cls
    for cls in (*typing.get_args(AgendaEvent), *typing.get_args(ObjectEvent))
}
"""Every current tag and the Struct that decodes it."""


def event_type(event: Event) -> str:
    """The stable tag of ``event``."""
    return str(event.__struct_config__.tag)


def agenda_stream(agenda_id: str) -> str:
    """The id of the stream that holds an agenda's history."""
    return f"agenda-{agenda_id}"


def object_stream(kind: str, object_id: str) -> str:
    """The id of the stream of a configuration object (``customer-acme``, ...)."""
    return f"{kind}-{object_id}"
