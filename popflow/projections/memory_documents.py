"""The document projection in process memory, beside the memory event store.

It is an *inline* projection of :class:`~popflow.events.memory.MemoryEventStore`: the store
calls :meth:`MemoryDocumentStore.apply` with every batch under its append lock, so a
document is readable the moment its event is acknowledged, as with PostgreSQL's trigger.
It keeps the events that concern documents (references to the log's own objects), which is
what a rebuild folds again.

Progress documents (``progress/agenda``, ``progress/operation``) are not kept here: they
are read from the progress projection's views, queried with the same rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import msgspec

from popflow.events.store import RecordedEvent
from popflow.projections.documents import (
    AGENDA_PROGRESS,
    CUSTOMER,
    DOCUMENT_EVENT_TYPES,
    INSIGHT,
    OPERATION_PROGRESS,
    PROGRESS_KINDS,
    RESOURCE_POOL,
    RESOURCE_POOL_FIELD,
    Document,
    DocumentQuery,
    RoutingDocuments,
    count_documents,
    document_key,
    fold_document,
    routing_pool,
    select_documents,
)
from popflow.projections.memory import MemoryProgressStore
from popflow.projections.progress import ProgressView


class MemoryDocumentStore:
    """Documents by ``(kind, id)`` and the owner of every stream, in dictionaries."""

    def __init__(self, progress: MemoryProgressStore | None = None) -> None:
        self._progress = progress
        self._documents: dict[str, dict[str, Document]] = {}
        """Documents by kind, then id."""
        self._owners: dict[str, str] = {}
        self._log: list[RecordedEvent] = []
        """Every event applied that concerns a document, in order."""

    def apply(self, batch: Sequence[RecordedEvent]) -> None:
        """Fold a committed batch in (register with ``events.add_inline_projection``)."""
        relevant = [recorded for recorded in batch if recorded.type in DOCUMENT_EVENT_TYPES]
        self._log.extend(relevant)
        self._fold(relevant)

    async def rebuild(self) -> None:
        """Recompute every document and owner from the events. Nothing awaits in between,
        so no append can interleave."""
        self._documents.clear()
        self._owners.clear()
        self._fold(self._log)

    def _fold(self, events: Sequence[RecordedEvent]) -> None:
        for recorded in events:
            key = document_key(recorded)
            if key is None:
                continue
            kind, document_id = key
            documents = self._documents.setdefault(kind, {})
            doc = fold_document(documents.get(document_id), recorded)
            if doc is None:
                documents.pop(document_id, None)
            else:
                documents[document_id] = doc
                self._owners[recorded.stream_id] = doc.customer_id

    async def get(self, kind: str, document_id: str) -> Document | None:
        if kind in PROGRESS_KINDS:
            return next((d for d in self._progress_documents(kind) if d.id == document_id), None)
        return self._documents.get(kind, {}).get(document_id)

    async def query(self, query: DocumentQuery) -> list[Document]:
        return select_documents(self._of_kind(query.kind), query)

    async def count(self, query: DocumentQuery) -> int:
        return count_documents(self._of_kind(query.kind), query)

    async def owners(self, stream_ids: Sequence[str]) -> dict[str, str]:
        return {s: self._owners[s] for s in stream_ids if s in self._owners}

    async def routing(self, customer_id: str) -> RoutingDocuments:
        customers = self._documents.get(CUSTOMER, {})
        customer = customers.get(customer_id)
        pool_id = routing_pool(customer)
        if customer is None or pool_id is None:
            return RoutingDocuments(customer=customer, any_customer=bool(customers))
        insights = self._documents.get(INSIGHT, {})
        query = DocumentQuery(
            kind=INSIGHT, equals=((RESOURCE_POOL_FIELD, pool_id),), limit=len(insights)
        )
        return RoutingDocuments(
            customer=customer,
            any_customer=True,
            insights=select_documents(insights.values(), query),
            pool=self._documents.get(RESOURCE_POOL, {}).get(pool_id),
        )

    def _of_kind(self, kind: str) -> Iterator[Document]:
        if kind in PROGRESS_KINDS:
            return self._progress_documents(kind)
        return iter(self._documents.get(kind, {}).values())

    def _progress_documents(self, kind: str) -> Iterator[Document]:
        views = [] if self._progress is None else list(self._progress.views.values())
        for view in views:
            yield from _agenda_progress(view) if kind == AGENDA_PROGRESS else _operations(view)


def _agenda_progress(view: ProgressView) -> list[Document]:
    agenda = view.agenda
    return [_progress_document(AGENDA_PROGRESS, agenda.id, agenda.customer_id, agenda)]


def _operations(view: ProgressView) -> list[Document]:
    return [
        _progress_document(OPERATION_PROGRESS, op.id, op.customer_id, op)
        for op in view.operations.values()
    ]


def _progress_document(kind: str, doc_id: str, customer_id: str, row: msgspec.Struct) -> Document:
    # The progress projection does not track stream versions: progress documents carry 0.
    return Document(
        kind=kind, id=doc_id, customer_id=customer_id, version=0, body=msgspec.to_builtins(row)
    )
