"""Documents: the POP JSON of every agenda and configuration object, as the API reads them.

The document projection folds ``object.*`` events (customers, resource pools, insights,
agenda templates) and the agenda events that change an agenda's description
(``agenda.submitted``, ``operations.generated``, ``agenda.updated``, ``agenda.deleted``)
into one document per object. It is maintained inline, in the append's own transaction, so
an object is readable the moment its creation is acknowledged (routing reads customers and
insights right after they are created).

Queries are equality filters on top-level fields, ANDed, filtered by what the caller may see
*before* the limit, so ``count`` never leaks invisible objects (pop-spec §10 item 13).
The same fold runs in memory and, as SQL, in PostgreSQL; one contract suite checks both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Final, Protocol, cast

import msgspec

from popflow.events.store import RecordedEvent
from popflow.events.vocabulary import (
    AgendaSubmitted,
    AgendaUpdated,
    ObjectCreated,
    ObjectDeleted,
    ObjectUpdated,
    OperationsGenerated,
    agenda_stream,
)
from popflow.projections.progress import epoch_ms

AGENDA = "agenda"
AGENDA_TEMPLATE = "agendatemplate"
CUSTOMER = "customer"
INSIGHT = "insight"
RESOURCE_POOL = "resourcepool"
AGENDA_PROGRESS = "progress/agenda"
OPERATION_PROGRESS = "progress/operation"

OBJECT_KINDS = frozenset({AGENDA_TEMPLATE, CUSTOMER, INSIGHT, RESOURCE_POOL})
"""Kinds kept by ``object.*`` events, each in a stream ``<kind>-<id>``."""

DOCUMENT_KINDS = frozenset({AGENDA, *OBJECT_KINDS})
"""Kinds held by the document projection."""

PROGRESS_KINDS = frozenset({AGENDA_PROGRESS, OPERATION_PROGRESS})
"""Kinds read from the progress projection, queried the same way."""


class Document(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    id: str
    customer_id: str
    version: int
    """The version of the object's stream after the last event that changed the document."""
    body: dict[str, Any]
    """The POP JSON, with ``id``, ``customerId``, ``addedTime`` and ``updatedTime``."""


class RoutingDocuments(msgspec.Struct, frozen=True, kw_only=True):
    """What routing an agenda of one customer reads (pop-spec §3.1), read at once."""

    customer: Document | None
    """The Customer, if it exists."""
    any_customer: bool
    """Whether any Customer exists at all (until one does, agendas need no customer)."""
    insights: list[Document] = []
    """The insights of the customer's resource pool, oldest first (``addedTime``, then id)."""
    pool: Document | None = None
    """The customer's ResourcePool, if it exists."""


RESOURCE_POOL_FIELD: Final = "resourcePoolId"


def routing_pool(customer: Document | None) -> str | None:
    """The resource pool a customer's agendas go to (None: it names none)."""
    pool = None if customer is None else customer.body.get(RESOURCE_POOL_FIELD)
    return str(pool) if pool else None


class Visibility(msgspec.Struct, frozen=True, kw_only=True):
    """Which documents a caller may see (pop-spec §6.2); ``None`` in a query means all.

    A document is visible when its ``customerId`` is one of ``accounts`` (exact match), or,
    with ``shared``, when it is global (``isGlobal: true``) or one of ``accounts``,
    lower-cased, is among its ``allowedCustomerIds`` (which are stored lower-cased).
    """

    accounts: frozenset[str]
    shared: bool = False


class DocumentQuery(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    equals: tuple[tuple[str, str], ...] = ()
    """``(field, value)`` pairs, ANDed. A field matches when its top-level value, as text
    (a string as is, a number or boolean in its JSON spelling), equals ``value``."""
    visible_to: Visibility | None = None
    limit: int = 100


class DocumentReader(Protocol):
    async def get(self, kind: str, document_id: str) -> Document | None: ...

    async def query(self, query: DocumentQuery) -> list[Document]:
        """Matching documents, oldest first (by ``addedTime``, then id), up to the limit."""
        ...

    async def count(self, query: DocumentQuery) -> int:
        """How many documents match (the limit does not apply)."""
        ...

    async def owners(self, stream_ids: Sequence[str]) -> dict[str, str]:
        """The customer owning each stream (agenda or object), deleted ones included;
        streams never seen are absent."""
        ...

    async def routing(self, customer_id: str) -> RoutingDocuments:
        """The Customer ``customer_id``, whether any customer exists, and the insights and
        the ResourcePool of the customer's pool: what routing one agenda needs, in one
        read."""
        ...


class DocumentStore(DocumentReader, Protocol):
    async def rebuild(self) -> None:
        """Recompute every document from the whole event log."""
        ...


# --- the fold ---------------------------------------------------------------------------------
#
# One document per (kind, id). Object events name their document; agenda events belong to the
# agenda of their stream (``agenda-<id>``). The same rules, as SQL, are
# ``popflow.documents_apply_event`` (migration 0004): change one, change both.

AGENDA_UPDATE_FIELDS = frozenset({"title", "linkId", "jobId", "params"})
"""The agenda fields ``agenda.updated`` may change; other keys of its ``changes`` are ignored."""

DOCUMENT_EVENT_TYPES = frozenset(
    {
        "object.created",
        "object.updated",
        "object.deleted",
        "agenda.submitted",
        "operations.generated",
        "agenda.updated",
        "agenda.deleted",
    }
)
"""Event types that change documents; every other event leaves them as they are."""

_AGENDA_STREAM_PREFIX = agenda_stream("")


def document_key(recorded: RecordedEvent) -> tuple[str, str] | None:
    """The ``(kind, id)`` of the document ``recorded`` changes; None when it changes none."""
    event = recorded.event
    if isinstance(event, ObjectCreated | ObjectUpdated | ObjectDeleted):
        return event.kind, event.object_id
    if recorded.type in DOCUMENT_EVENT_TYPES:
        return AGENDA, _agenda_id(recorded)
    return None


def _agenda_id(recorded: RecordedEvent) -> str:
    return recorded.stream_id.removeprefix(_AGENDA_STREAM_PREFIX)


def fold_document(doc: Document | None, recorded: RecordedEvent) -> Document | None:
    """The document after ``recorded``: None when it does not exist (any more)."""
    change = _CHANGES.get(recorded.type)
    return doc if change is None else change(doc, recorded)


def _created(_doc: Document | None, recorded: RecordedEvent) -> Document:
    event = cast(ObjectCreated, recorded.event)
    body = {
        **event.document,
        "id": event.object_id,
        "customerId": event.customer_id,
        "addedTime": event.time,
        "updatedTime": event.time,
    }
    return _document(event.kind, event.object_id, recorded, body)


def _object_updated(doc: Document | None, recorded: RecordedEvent) -> Document | None:
    if doc is None:
        return None
    event = cast(ObjectUpdated, recorded.event)
    # id and addedTime identify and order the document: no update moves them.
    pinned = {"id": doc.id, "addedTime": doc.body["addedTime"], "updatedTime": event.time}
    return _changed(doc, recorded, {**doc.body, **_present(event.changes), **pinned})


def _submitted(_doc: Document | None, recorded: RecordedEvent) -> Document:
    event = cast(AgendaSubmitted, recorded.event)
    now, agenda_id = epoch_ms(recorded.recorded_at), _agenda_id(recorded)
    body = {
        **msgspec.to_builtins(event.agenda),
        "id": agenda_id,
        "progressId": event.progress_id,
        "agendaInsight": msgspec.to_builtins(event.insight),
        "addedTime": now,
        "updatedTime": now,
    }
    return _document(AGENDA, agenda_id, recorded, body)


def _generated(doc: Document | None, recorded: RecordedEvent) -> Document | None:
    if doc is None:
        return None
    event = cast(OperationsGenerated, recorded.event)
    body = {
        **doc.body,
        "operations": [*doc.body.get("operations", []), *msgspec.to_builtins(event.operations)],
        "updatedTime": epoch_ms(recorded.recorded_at),
    }
    if event.params:
        body["params"] = {**doc.body.get("params", {}), **event.params}
    return _changed(doc, recorded, body)


def _agenda_updated(doc: Document | None, recorded: RecordedEvent) -> Document | None:
    if doc is None:
        return None
    event = cast(AgendaUpdated, recorded.event)
    changes = {k: v for k, v in _present(event.changes).items() if k in AGENDA_UPDATE_FIELDS}
    return _changed(doc, recorded, {**doc.body, **changes, "updatedTime": event.time})


def _deleted(_doc: Document | None, _recorded: RecordedEvent) -> None:
    return None


def _present(changes: dict[str, Any]) -> dict[str, Any]:
    """A sparse merge's changes: a null value means "keep what is stored"."""
    return {k: v for k, v in changes.items() if v is not None}


def _document(kind: str, doc_id: str, recorded: RecordedEvent, body: dict[str, Any]) -> Document:
    return Document(
        kind=kind,
        id=doc_id,
        customer_id=str(body["customerId"]),
        version=recorded.version,
        body=body,
    )


def _changed(doc: Document, recorded: RecordedEvent, body: dict[str, Any]) -> Document:
    # The owner follows customerId while it is a string (it is the visibility key).
    owner = body.get("customerId")
    return msgspec.structs.replace(
        doc,
        customer_id=owner if isinstance(owner, str) else doc.customer_id,
        version=recorded.version,
        body=body,
    )


_CHANGES: dict[str, Callable[[Document | None, RecordedEvent], Document | None]] = {
    "object.created": _created,
    "object.updated": _object_updated,
    "object.deleted": _deleted,
    "agenda.submitted": _submitted,
    "operations.generated": _generated,
    "agenda.updated": _agenda_updated,
    "agenda.deleted": _deleted,
}


# --- queries ----------------------------------------------------------------------------------


def value_text(value: Any) -> str | None:
    """A top-level JSON value as PostgreSQL's ``->>`` spells it, for equality filters: a
    string as is, ``true``/``false``, a number in plain decimal notation (``1e20`` is
    ``100000000000000000000``); None for null, objects and arrays, which never match."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest spelling that round-trips, which is what the JSON encoder
        # writes and PostgreSQL parses into numeric: the same digits, in plain notation.
        return format(Decimal(repr(value)), "f")
    return None


def is_visible(doc: Document, visibility: Visibility | None) -> bool:
    """Whether a caller with ``visibility`` may see ``doc`` (see :class:`Visibility`)."""
    if visibility is None or doc.customer_id in visibility.accounts:
        return True
    if not visibility.shared:
        return False
    if doc.body.get("isGlobal") is True:
        return True
    allowed = doc.body.get("allowedCustomerIds")
    if not isinstance(allowed, list):
        return False
    lowered = {account.lower() for account in visibility.accounts}
    return any(isinstance(a, str) and a in lowered for a in allowed)


def matches(doc: Document, query: DocumentQuery) -> bool:
    """Whether ``doc`` is one of the documents ``query`` asks for (the limit aside)."""
    return (
        doc.kind == query.kind
        and all(value_text(doc.body.get(name)) == value for name, value in query.equals)
        and is_visible(doc, query.visible_to)
    )


def select_documents(docs: Iterable[Document], query: DocumentQuery) -> list[Document]:
    """What :meth:`DocumentReader.query` returns, from every document there is."""
    found = sorted((d for d in docs if matches(d, query)), key=_oldest_first)
    return found[: max(query.limit, 0)]


def count_documents(docs: Iterable[Document], query: DocumentQuery) -> int:
    """What :meth:`DocumentReader.count` returns, from every document there is."""
    return sum(1 for d in docs if matches(d, query))


def _oldest_first(doc: Document) -> tuple[int, str]:
    # Ids compare by code point, as PostgreSQL's COLLATE "C" does.
    return int(doc.body.get("addedTime", 0)), doc.id
