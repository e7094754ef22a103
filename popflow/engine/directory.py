"""The directory: customers, resource pools, insights and agenda templates, as events.

Each object lives in a stream of its own (``customer-acme``, ``insight-<uuid>``...): creating
it appends ``object.created`` to a new stream, a PUT appends ``object.updated`` at the
version the writer read (a concurrent writer gets a conflict, never a lost update), and a
DELETE appends ``object.deleted``. Reads come from the document projection
(:mod:`popflow.projections.documents`), which follows the events inline.

The rules are POP's (pop-spec §2.3): ``customerId`` is required on every object; a PUT is a
sparse merge (absent and null fields keep their stored values); a DELETE of a missing
object is not an error; and who may do what follows :mod:`popflow.engine.visibility`:
owners write, and global or allowed objects are readable by others but never writable.
Per kind, the defaults on creation and the required fields are in :data:`KIND_RULES`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from popflow.engine.clock import Clock
from popflow.engine.routing import CATCH_ALL_FIELD
from popflow.engine.scheduling import insight_problems
from popflow.engine.visibility import (
    Caller,
    can_read,
    can_write,
    document_visibility,
    not_permitted,
)
from popflow.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    InvalidRequest,
    NotFound,
)
from popflow.events.store import AppendRequest, EventStore, append_one
from popflow.events.vocabulary import ObjectCreated, ObjectDeleted, ObjectUpdated, object_stream
from popflow.projections.documents import (
    AGENDA_TEMPLATE,
    CUSTOMER,
    INSIGHT,
    RESOURCE_POOL,
    Document,
    DocumentQuery,
    DocumentReader,
)


@dataclasses.dataclass(frozen=True)
class KindRules:
    title: str
    """The POP class name, for messages."""
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    requires_title: bool = False


KIND_RULES: Mapping[str, KindRules] = {
    CUSTOMER: KindRules("Customer", requires_title=True),
    RESOURCE_POOL: KindRules("ResourcePool"),
    INSIGHT: KindRules("Insight", {"isGlobal": False, "queueSize": 0}, requires_title=True),
    AGENDA_TEMPLATE: KindRules("AgendaTemplate", {"isGlobal": False, "isDefaultTemplate": False}),
}

COMPUTED_FIELDS: Mapping[str, frozenset[str]] = {RESOURCE_POOL: frozenset({"insightIds"})}
"""Fields computed on read, whatever a writer sends (pop-spec §1.4)."""

_SERVER_FIELDS = frozenset({"id", "addedTime", "updatedTime"})


class Directory:
    """Create, read, update and delete configuration objects on behalf of a caller."""

    def __init__(
        self,
        events: EventStore,
        documents: DocumentReader,
        *,
        clock: Clock,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._events = events
        self._documents = documents
        self._clock = clock
        self._new_id = new_id

    # --- reads ------------------------------------------------------------------------------

    async def get(self, kind: str, object_id: str, caller: Caller) -> Document | None:
        """The object if it exists and the caller may read it (else None, as POP: a GET of
        an invisible object is an empty result, not an error)."""
        document = await self._documents.get(kind, object_id)
        if document is None or not can_read(caller, kind, document.body):
            return None
        return await self._completed(document)

    async def query(
        self, kind: str, equals: Sequence[tuple[str, str]], caller: Caller, *, limit: int
    ) -> list[Document]:
        query = self._query(kind, equals, caller, limit)
        return [await self._completed(d) for d in await self._documents.query(query)]

    async def count(self, kind: str, equals: Sequence[tuple[str, str]], caller: Caller) -> int:
        return await self._documents.count(self._query(kind, equals, caller, 0))

    def _query(
        self, kind: str, equals: Sequence[tuple[str, str]], caller: Caller, limit: int
    ) -> DocumentQuery:
        return DocumentQuery(
            kind=kind,
            equals=tuple(equals),
            visible_to=document_visibility(caller, kind),
            limit=limit,
        )

    async def _completed(self, document: Document) -> Document:
        if document.kind != RESOURCE_POOL:
            return document
        insights = await self._documents.query(
            DocumentQuery(kind=INSIGHT, equals=(("resourcePoolId", document.id),), limit=10_000)
        )
        body = {**document.body, "insightIds": [i.id for i in insights]}
        return _with_body(document, body)

    # --- writes -----------------------------------------------------------------------------

    async def create(self, kind: str, fields: Mapping[str, Any], caller: Caller) -> Document:
        """Record a new object; ``id`` is generated unless given (a Customer's id is its
        customerId)."""
        rules = KIND_RULES[kind]
        body = _normalized({**rules.defaults, **_given(fields, kind)})
        customer_id = body.get("customerId")
        problems = _problems(kind, rules, body)
        if problems:
            raise InvalidRequest(problems)
        if not can_write(caller, body):
            raise not_permitted(str(customer_id))
        object_id = str(body.get("id") or (customer_id if kind == CUSTOMER else self._new_id()))
        body["id"] = object_id
        event = ObjectCreated(
            kind=kind,
            object_id=object_id,
            customer_id=str(customer_id),
            document=body,
            time=self._clock.now_ms(),
        )
        try:
            await append_one(
                self._events, AppendRequest(object_stream(kind, object_id), 0, [event])
            )
        except ConcurrencyConflict:
            raise AlreadyExists(f"{rules.title} {object_id} already exists") from None
        return await self._require(kind, object_id)

    async def update(
        self, kind: str, object_id: str, fields: Mapping[str, Any], caller: Caller
    ) -> Document:
        """A sparse merge of ``fields`` into the stored object, at the version read."""
        rules = KIND_RULES[kind]
        stored = await self._documents.get(kind, object_id)
        if stored is None:
            raise NotFound(f"{rules.title} {object_id} not found")
        if not can_write(caller, stored.body):
            raise not_permitted(stored.customer_id)
        changes = _normalized({k: v for k, v in _given(fields, kind).items() if k != "id"})
        merged = {**stored.body, **changes}
        problems = _problems(kind, rules, merged)
        if problems:
            raise InvalidRequest(problems)
        if not can_write(caller, merged):
            raise not_permitted(str(merged.get("customerId")))
        if kind == CUSTOMER and changes.get("customerId", object_id) != object_id:
            raise InvalidRequest("A Customer's customerId must equal its id.")
        event = ObjectUpdated(
            kind=kind, object_id=object_id, changes=changes, time=self._clock.now_ms()
        )
        stream = object_stream(kind, object_id)
        await append_one(self._events, AppendRequest(stream, stored.version, [event]))
        return await self._require(kind, object_id)

    async def delete(self, kind: str, object_id: str, caller: Caller) -> Document | None:
        """Delete the object; None when there was nothing to delete (not an error)."""
        stored = await self._documents.get(kind, object_id)
        if stored is None:
            return None
        if not can_write(caller, stored.body):
            raise not_permitted(stored.customer_id)
        event = ObjectDeleted(kind=kind, object_id=object_id, time=self._clock.now_ms())
        stream = object_stream(kind, object_id)
        await append_one(self._events, AppendRequest(stream, stored.version, [event]))
        return stored

    async def _require(self, kind: str, object_id: str) -> Document:
        document = await self._documents.get(kind, object_id)
        if document is None:  # pragma: no cover - the projection is inline
            raise NotFound(f"{KIND_RULES[kind].title} {object_id} not found")
        return await self._completed(document)


def _with_body(document: Document, body: dict[str, Any]) -> Document:
    return Document(
        kind=document.kind,
        id=document.id,
        customer_id=document.customer_id,
        version=document.version,
        body=body,
    )


def _given(fields: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The fields a writer set: nulls mean "keep", server and computed fields are ignored."""
    ignored = _SERVER_FIELDS - {"id"} | COMPUTED_FIELDS.get(kind, frozenset())
    return {k: v for k, v in fields.items() if v is not None and k not in ignored}


def _normalized(body: dict[str, Any]) -> dict[str, Any]:
    """POP stores allowedCustomerIds lower-cased (pop-spec §1.0)."""
    allowed = body.get("allowedCustomerIds")
    if isinstance(allowed, list):
        body["allowedCustomerIds"] = sorted({str(a).lower() for a in allowed})
    return body


def _problems(kind: str, rules: KindRules, body: Mapping[str, Any]) -> list[str]:
    problems = []
    if not str(body.get("customerId") or "").strip():
        problems.append("The customerId field must be specified.")
    if rules.requires_title and not str(body.get("title") or "").strip():
        problems.append(f"The title field must be specified on a {rules.title}.")
    if kind == CUSTOMER and body.get("id") not in (None, body.get("customerId")):
        problems.append("A Customer's id must equal its customerId.")
    if kind == INSIGHT:
        problems += insight_problems(body)
    catch_all = body.get(CATCH_ALL_FIELD)
    if kind == RESOURCE_POOL and catch_all is not None and not isinstance(catch_all, str):
        problems.append(f"{CATCH_ALL_FIELD} must be an insight id (a string); got {catch_all!r}.")
    return problems
