"""The JSON bodies the API accepts, as strict msgspec models (and its OpenAPI schemas).

Every request body is decoded with one of these models: unknown fields and wrong types are
refused with HTTP 400 and a message that names the field (``$.operations[0].name``), where
POP silently ignored them. The field names are POP's. Server-assigned fields (``addedTime``,
``updatedTime``, a resource pool's ``insightIds``) are accepted so that a client can send
back what it read, and ignored. Every field is optional in the model: what a POST requires
is checked by the directory (HTTP 422), and in a PUT an absent or null field keeps its
stored value.

The OpenAPI document (:mod:`popflow.api.openapi`) is generated from these same models.
"""

from __future__ import annotations

from typing import Any

import msgspec

from popflow.projections.documents import AGENDA_TEMPLATE, CUSTOMER, INSIGHT, RESOURCE_POOL


class _Strict(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    pass


class _Object(_Strict):
    id: str | None = None
    customer_id: str | None = None
    title: str | None = None
    cid: str | None = None
    added_time: int | None = None
    updated_time: int | None = None


class Customer(_Object, kw_only=True):
    """A customer: its agendas are routed to the insights of ``resourcePoolId``."""

    billing_code: str | None = None
    resource_pool_id: str | None = None


class ResourcePool(_Object, kw_only=True):
    """A processing farm; ``insightIds`` is computed on every read. ``catchAllInsightId``
    names the insight of the pool that takes agendas no insight's mappers claim."""

    insight_ids: list[str] | None = None
    catch_all_insight_id: str | None = None


class _Shared(_Object, kw_only=True):
    is_global: bool | None = None
    global_: bool | None = msgspec.field(default=None, name="global")
    """POP wrote both ``isGlobal`` and ``global``; either is accepted."""
    allowed_customer_ids: list[str] | None = None


class Insight(_Shared, kw_only=True):
    """A queue of a resource pool, and the mappers that route agendas to it.

    ``schedulingAlgorithm``: FirstInFirstOut (the default), RoundRobin or Priority;
    ``queueSize``: most agendas dispatched at once (0: unbounded); for Priority,
    ``priorityAgingSeconds`` (waiting this long counts as one point of priority, default 60)
    and ``retryBoost`` (points added per re-entry into the queue, default 0)."""

    resource_pool_id: str | None = None
    queue_name: str | None = None
    queue_size: int | None = None
    scheduling_algorithm: str | None = None
    priority_aging_seconds: float | None = None
    retry_boost: int | None = None
    mappers: dict[str, list[str]] | None = None


class AgendaTemplate(_Shared, kw_only=True):
    """An agenda with ``@<parameter>`` references, run with a payload."""

    static_parameters: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    agenda: dict[str, Any] | None = None
    is_default_template: bool | None = None


OBJECT_MODELS: dict[str, type[_Shared] | type[_Object]] = {
    CUSTOMER: Customer,
    RESOURCE_POOL: ResourcePool,
    INSIGHT: Insight,
    AGENDA_TEMPLATE: AgendaTemplate,
}


def object_fields(model: _Object) -> dict[str, Any]:
    """The fields a body set, as POP JSON (``global`` folded into ``isGlobal``)."""
    fields: dict[str, Any] = msgspec.to_builtins(model)
    if "global" in fields:
        fields.setdefault("isGlobal", fields.pop("global"))
    return fields


# --- agendas and progress ------------------------------------------------------------------


class OperationBody(_Strict, kw_only=True):
    name: str | None = None
    type: str | None = None
    payload: Any = None
    params: dict[str, Any] | None = None
    id: str | None = None


class AgendaBody(_Object, kw_only=True):
    """An agenda as submitted (``POST /pop/agenda``) or changed (``PUT``)."""

    operations: list[OperationBody] | None = None
    params: dict[str, Any] | None = None
    link_id: str | None = None
    job_id: str | None = None
    progress_id: str | None = None
    agenda_insight: dict[str, Any] | None = None


class DiagnosticBody(_Strict, kw_only=True):
    message: str | None = None
    status_code: str | None = None
    time: int | None = None
    stack_trace: str | None = None
    payload: Any = None


class OperationProgressBody(_Object, kw_only=True):
    agenda_progress_id: str | None = None
    operation: str | None = None
    processing_state: str | None = None
    processing_state_message: str | None = None
    percent_complete: float | None = None
    diagnostic_events: list[DiagnosticBody] | None = None
    result_payload: str | None = None
    params: dict[str, Any] | None = None
    attempt_count: int | None = None
    attempt_time: int | None = None
    started_time: int | None = None
    completed_time: int | None = None


class AgendaProgressBody(_Object, kw_only=True):
    agenda_id: str | None = None
    link_id: str | None = None
    external_id: str | None = None
    processing_state: str | None = None
    processing_state_message: str | None = None
    operation_progress: list[OperationProgressBody] | None = None
    diagnostic_events: list[DiagnosticBody] | None = None
    attempts_completed: int | None = None
    maximum_attempts: int | None = None
    started_time: int | None = None
    completed_time: int | None = None
    percent_complete: float | None = None
    params: dict[str, Any] | None = None
    agenda_insight: dict[str, Any] | None = None


# --- services ------------------------------------------------------------------------------


class RunAgendaRequest(_Strict, kw_only=True):
    """``POST /pop/agenda/service/run``: ``payload`` as JSON text (as POP) or as JSON."""

    agenda_template_id: str | None = None
    payload: Any = None
    customer_id: str | None = None
    """popflow's addition: the customer to run the agenda for (one the caller acts for)."""


class ProgressSummaryRequest(_Strict, kw_only=True):
    link_id: str | None = None


class GetAgendaRequest(_Strict, kw_only=True):
    insight_id: str | None = None
    count: int | None = None


class CreateAgendaRequest(_Strict, kw_only=True):
    agendas: list[dict[str, Any]] | None = None


class UpdateAgendaProgressRequest(_Strict, kw_only=True):
    agenda_progress: AgendaProgressBody | None = None


class UpdateAgendaRequest(_Strict, kw_only=True):
    agenda_id: str | None = None
    operations: list[OperationBody] | None = None
    params: dict[str, Any] | None = None


# --- answers -------------------------------------------------------------------------------


class Collection(msgspec.Struct, omit_defaults=True):
    """Every resource answers with ``{"all": [...], "count": n}``."""

    all: list[dict[str, Any]]
    count: int
    cid: str | None = None


class EventDocument(msgspec.Struct, rename="camel"):
    """One recorded event (the shape of ``popflow history --json``)."""

    position: int
    version: int
    stream_id: str
    type: str
    recorded_at: str
    data: dict[str, Any]


class EventPage(msgspec.Struct):
    """A page of the global feed; continue with ``after=next``."""

    events: list[EventDocument]
    next: int
