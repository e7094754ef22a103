"""What the router cannot tell about each operation: the table the OpenAPI document adds.

An aiohttp router knows a route's method and path, nothing more. :data:`OPERATIONS` holds
the rest, keyed by the same (method, path): a :class:`Doc` per operation with its summary,
tag, the model that decodes its request body, the type of its answer, its statuses and its
:class:`Param` (query, header and path parameters). :mod:`popflow.api.openapi` joins the
two into the document; a route missing from the table, or an entry naming no route, is a
documentation gap that a test refuses.

The table is written once per *kind* of operation, not once per route: every object kind
is read the same way (``_readable``), written the same way (``_writable``), and the
progress kinds, derived from events, refuse creation and deletion (``_derived``).
The request bodies are the msgspec models of :mod:`popflow.api.models`, so the schemas
the document shows are exactly what the decoder accepts. :data:`TAGS` groups the
operations the way the reference page lists them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from popflow.api import models
from popflow.api.feed import DEFAULT_PAGE, MAX_PAGE
from popflow.api.queues import QUEUE_PATH
from popflow.api.resources import DEFAULT_LIMIT, MAX_LIMIT, known_fields
from popflow.api.submit import IDEMPOTENCY_HEADER
from popflow.engine.queue_view import QueueView
from popflow.projections.documents import (
    AGENDA,
    AGENDA_PROGRESS,
    OBJECT_KINDS,
    OPERATION_PROGRESS,
)

JSON: Final = "application/json"


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    where: str
    """``query``, ``header`` or ``path``."""
    description: str
    schema: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"type": "string"})
    required: bool = False
    free_form: bool = False
    """Stands for any number of query parameters (``by<field>=value``)."""


@dataclasses.dataclass(frozen=True)
class Doc:
    """What the router cannot tell about one operation."""

    summary: str
    tag: str
    answer: str
    """What the successful answer holds."""
    status: int = 200
    """The successful answer's status (405 for an operation that always refuses)."""
    also: Mapping[int, str] = dataclasses.field(default_factory=dict)
    """Other answers of the same shape as the successful one, by status."""
    errors: tuple[int, ...] = ()
    """Statuses besides those every operation of its kind can answer (see _responses)."""
    body: Any = None
    """The request body's model."""
    answers: Any = dict[str, Any]
    """The successful answer's type (any type msgspec can describe), or a JSON Schema."""
    media: str = JSON
    params: tuple[Param, ...] = ()
    streams: str | None = None
    """With ``Accept: text/event-stream``: what the Server-Sent Events stream carries."""


# --- the table -----------------------------------------------------------------------------

_BY_FIELDS = Param("byfields", "query", "Comma-separated field names: answer only these.")
_LAST_EVENT_ID = Param(
    "Last-Event-ID",
    "header",
    "With a stream: resume right after this global position (sent by reconnecting clients).",
    {"type": "integer", "minimum": 0},
)
_ID_QUERY = Param("id", "query", "The object's id, when the path does not name it.")
_RESOURCES, _PROGRESS, _SERVICES, _EVENTS, _OPERATIONS, _DESCRIPTION = (
    "resources",
    "progress",
    "services",
    "events",
    "operations",
    "description",
)


def _collection_query(kind: str) -> tuple[Param, ...]:
    fields = ", ".join(sorted(known_fields(kind).values()))
    return (
        Param("id", "query", "Read one object by id (an empty collection when it is absent)."),
        Param(
            "by<field>",
            "query",
            "Any number of by<field>=value filters, ANDed; the field is matched "
            f"case-insensitively among: {fields}.",
            {"type": "object", "additionalProperties": {"type": "string"}},
            free_form=True,
        ),
        Param(
            "bylimit",
            "query",
            "The most objects to answer.",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        ),
        Param(
            "bycount",
            "query",
            "true: answer only the count of visible matches.",
            {"type": "boolean"},
        ),
        _BY_FIELDS,
    )


def _readable(
    kind: str, title: str, tag: str, streams: str | None = None
) -> dict[tuple[str, str], Doc]:
    many = f"A collection of {title} objects the caller may see (all, count, cid)."
    return {
        ("GET", f"/pop/{kind}"): Doc(
            f"List or query {title} objects",
            tag,
            many,
            answers=models.Collection,
            params=_collection_query(kind),
        ),
        ("GET", f"/pop/{kind}/{{id}}"): Doc(
            f"Read one {title}",
            tag,
            f"A collection holding the {title}.",
            answers=models.Collection,
            params=(_BY_FIELDS, *((_LAST_EVENT_ID,) if streams else ())),
            streams=streams,
        ),
    }


def _writable(
    kind: str, title: str, body: Any, *, create: bool = True
) -> dict[tuple[str, str], Doc]:
    table = {}
    for path, params in ((f"/pop/{kind}", (_ID_QUERY,)), (f"/pop/{kind}/{{id}}", ())):
        table["PUT", path] = Doc(
            f"Update a {title}: merge the body's non-null fields",
            _RESOURCES,
            f"A collection holding the updated {title}.",
            errors=(403, 404, 409),
            body=body,
            answers=models.Collection,
            params=params,
        )
        table["DELETE", path] = Doc(
            f"Delete a {title}",
            _RESOURCES,
            f"A collection holding the deleted {title}; empty when there was none.",
            errors=(403, 409),
            answers=models.Collection,
            params=params,
        )
    if create:
        table["POST", f"/pop/{kind}"] = Doc(
            f"Create a {title}",
            _RESOURCES,
            f"A collection holding the new {title}.",
            status=201,
            errors=(403, 409),
            body=body,
            answers=models.Collection,
        )
    return table


def _derived(kind: str, title: str, body: Any) -> dict[tuple[str, str], Doc]:
    table: dict[tuple[str, str], Doc] = {}
    for path, params in ((f"/pop/{kind}", (_ID_QUERY,)), (f"/pop/{kind}/{{id}}", ())):
        table["PUT", path] = Doc(
            f"Report {title}, as the agenda's owner",
            _PROGRESS,
            f"A collection holding the {title} after the report.",
            errors=(403, 404, 409),
            body=body,
            answers=models.Collection,
            params=params,
        )
        for method in ("POST", "DELETE"):
            table[method, path] = Doc(
                f"Not supported: {title} is derived from the agenda's events",
                _PROGRESS,
                "Always: progress is created by submitting an agenda and kept as history.",
                status=405,
            )
    return table


def _object_operations() -> dict[tuple[str, str], Doc]:
    table: dict[tuple[str, str], Doc] = {}
    for kind in sorted(OBJECT_KINDS):
        model = models.OBJECT_MODELS[kind]
        table |= _readable(kind, model.__name__, _RESOURCES) | _writable(
            kind, model.__name__, model
        )
    return table


_SERVICES_TABLE: Final = {
    ("POST", "/pop/agenda/service/run"): Doc(
        "Run an agenda template with a payload",
        _SERVICES,
        "The new agenda, as agendas and all (count 1).",
        status=201,
        errors=(403, 404, 409),
        body=models.RunAgendaRequest,
    ),
    ("POST", "/pop/progress/agenda/service"): Doc(
        "Summarise the progress of every agenda sharing a linkId",
        _SERVICES,
        "The ProgressSummary over the progress the caller may see.",
        body=models.ProgressSummaryRequest,
    ),
    ("POST", "/pop/resourcepool/service/getAgenda"): Doc(
        "Take agendas from an insight's queue (external executors)",
        _SERVICES,
        "Up to count leased agendas (agendas, all) with their agendaProgresses.",
        errors=(403, 404),
        body=models.GetAgendaRequest,
    ),
    ("POST", "/pop/resourcepool/service/createAgenda"): Doc(
        "Create agendas for the customers of the caller's insights",
        _SERVICES,
        "The created agendas; failures are listed by index in errors.",
        errors=(403, 404, 409),
        body=models.CreateAgendaRequest,
    ),
    ("POST", "/pop/resourcepool/service/updateAgendaProgress"): Doc(
        "Report the progress of a taken agenda",
        _SERVICES,
        "The request's cid.",
        errors=(403, 404, 409),
        body=models.UpdateAgendaProgressRequest,
    ),
    ("POST", "/pop/resourcepool/service/updateAgenda"): Doc(
        "Add operations to a running agenda",
        _SERVICES,
        "The agenda after the change.",
        errors=(403, 404, 409),
        body=models.UpdateAgendaRequest,
    ),
}

_EVENTS_TABLE: Final = {
    ("GET", "/pop/agenda/{id}/events"): Doc(
        "An agenda's events, in order",
        _EVENTS,
        "Every event of the agenda's stream.",
        answers=list[models.EventDocument],
        params=(_LAST_EVENT_ID,),
        streams="One message per event: id the global position, event its type.",
    ),
    ("GET", "/pop/events"): Doc(
        "The global feed of events the caller may see",
        _EVENTS,
        "A page of events; continue with after=next.",
        answers=models.EventPage,
        params=(
            Param(
                "after",
                "query",
                "Answer events after this global position.",
                {"type": "integer", "minimum": 0, "default": 0},
            ),
            Param(
                "limit",
                "query",
                "The most events to read (visible or not) for this page.",
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
            ),
            _LAST_EVENT_ID,
        ),
        streams="One message per event: id the global position, event its type.",
    ),
}

_QUEUES_TABLE: Final = {
    ("GET", QUEUE_PATH): Doc(
        "Read an insight's queue",
        _RESOURCES,
        "Agendas ready, dispatched and running, the oldest ready agenda's wait, and the "
        "insight's scheduling algorithm and queue size (0: unbounded). 404 when the caller "
        "may not read the insight; the default insight's queue is for superusers.",
        answers=QueueView,
    ),
}

_STATUS_ANSWER: Final = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
    "required": ["status"],
}

_OPERATIONS_TABLE: Final = {
    ("GET", "/healthz"): Doc(
        "Liveness: the process answers",
        _OPERATIONS,
        '{"status": "ok"}',
        answers=_STATUS_ANSWER,
    ),
    ("GET", "/readyz"): Doc(
        "Readiness: the database answers and no migration is pending",
        _OPERATIONS,
        '{"status": "ready"}',
        also={503: 'Not ready: {"status": "unavailable", "reason": ...}'},
        answers=_STATUS_ANSWER,
    ),
    ("GET", "/metrics"): Doc(
        "Metrics in the Prometheus text format",
        _OPERATIONS,
        "Requests by route, method and status; events appended; agendas by state; queue "
        "depth and oldest wait by insight.",
        answers=str,
        media="text/plain",
    ),
    ("GET", "/openapi.json"): Doc(
        "This API, described in OpenAPI 3.1",
        _DESCRIPTION,
        "The OpenAPI document.",
    ),
    ("GET", "/docs"): Doc(
        "This API's reference page",
        _DESCRIPTION,
        "An HTML page.",
        answers=str,
        media="text/html",
    ),
}

_AGENDA_TABLE: Final = {
    ("POST", "/pop/agenda"): Doc(
        "Submit an agenda",
        _RESOURCES,
        "A collection holding the new agenda.",
        status=201,
        also={200: "An idempotent retry: the agenda that the first submission created."},
        errors=(403, 404, 409),
        body=models.AgendaBody,
        answers=models.Collection,
        params=(
            Param(
                IDEMPOTENCY_HEADER,
                "header",
                "A retried submission with the same key answers the first one's agenda.",
            ),
        ),
    ),
}

OPERATIONS: Final[Mapping[tuple[str, str], Doc]] = {
    **_object_operations(),
    **_readable(AGENDA, "Agenda", _RESOURCES),
    **_writable(AGENDA, "Agenda", models.AgendaBody, create=False),
    **_AGENDA_TABLE,
    **_readable(
        AGENDA_PROGRESS,
        "AgendaProgress",
        _PROGRESS,
        streams="The AgendaProgress after each change, until the agenda completes.",
    ),
    **_derived(AGENDA_PROGRESS, "AgendaProgress", models.AgendaProgressBody),
    **_readable(OPERATION_PROGRESS, "OperationProgress", _PROGRESS),
    **_derived(OPERATION_PROGRESS, "OperationProgress", models.OperationProgressBody),
    **_SERVICES_TABLE,
    **_EVENTS_TABLE,
    **_QUEUES_TABLE,
    **_OPERATIONS_TABLE,
}
"""Every documented operation, keyed by (method, path as the router spells it)."""


TAGS: Final = (
    (_RESOURCES, "POP's objects: customers, resource pools, insights, templates, agendas."),
    (_PROGRESS, "AgendaProgress and OperationProgress, derived from the agendas' events."),
    (_SERVICES, "POP's services: run a template, summarise progress, external executors."),
    (_EVENTS, "Agendas' histories and the global event feed, as pages or live streams."),
    (_OPERATIONS, "Liveness, readiness and metrics (public)."),
    (_DESCRIPTION, "This document and its reference page (public)."),
)
"""Each tag and what its operations have in common, in the order the page lists them."""
