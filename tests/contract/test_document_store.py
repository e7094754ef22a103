"""The document projection contract, run against the memory and PostgreSQL adapters.

The same events go in; the same documents, queries, counts, visibility and owners come out.
On PostgreSQL the documents are folded by SQL in a trigger, so every test there also checks
that the SQL fold is the Python one (:func:`fold_document`), down to versions and times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import msgspec
import pytest

from popflow.engine.decide import submitted
from popflow.engine.memory_queue import MemoryWorkQueue
from popflow.engine.postgres_queue import PostgresWorkQueue
from popflow.engine.queue import WorkerInfo, WorkQueue
from popflow.events.memory import MemoryEventStore
from popflow.events.postgres import PostgresEventStore
from popflow.events.store import AppendRequest, EventStore
from popflow.events.vocabulary import (
    AgendaDeleted,
    AgendaInsight,
    AgendaUpdated,
    Event,
    ObjectCreated,
    ObjectDeleted,
    ObjectUpdated,
    OperationsGenerated,
    agenda_stream,
    object_stream,
)
from popflow.projections.documents import (
    AGENDA,
    AGENDA_PROGRESS,
    AGENDA_TEMPLATE,
    CUSTOMER,
    DOCUMENT_KINDS,
    INSIGHT,
    OPERATION_PROGRESS,
    RESOURCE_POOL,
    Document,
    DocumentQuery,
    DocumentReader,
    DocumentStore,
    RoutingDocuments,
    Visibility,
)
from popflow.projections.memory import MemoryProgressStore
from popflow.projections.memory_documents import MemoryDocumentStore
from popflow.projections.postgres import PostgresProgressStore
from popflow.projections.postgres_documents import PostgresDocumentStore
from popflow.projections.runner import ProjectionRunner
from popflow.projections.store import ProgressStore
from tests.conftest import fresh_pool
from tests.support.agendas import agenda, op
from tests.support.stores import ADAPTERS


@dataclasses.dataclass
class Subject:
    events: EventStore
    documents: DocumentStore
    progress: ProgressStore
    queue: WorkQueue
    pool: asyncpg.Pool | None = None


@pytest.fixture(params=ADAPTERS)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "memory":
        events = MemoryEventStore()
        progress = MemoryProgressStore()
        documents = MemoryDocumentStore(progress)
        events.add_inline_projection(documents.apply)
        yield Subject(events, documents, progress, MemoryWorkQueue(events))
        return
    async with fresh_pool(request.getfixturevalue("postgres_template")) as pool:
        store = PostgresEventStore(pool)
        yield Subject(
            store,
            PostgresDocumentStore(pool),
            PostgresProgressStore(pool),
            PostgresWorkQueue(store),
            pool,
        )


# --- the history the tests share ----------------------------------------------------------------


def create(kind: str, object_id: str, owner: str, time: int, **document: Any) -> ObjectCreated:
    return ObjectCreated(
        kind=kind, object_id=object_id, customer_id=owner, document=document, time=time
    )


OBJECTS: list[tuple[str, list[Event]]] = [
    (object_stream(CUSTOMER, "acme"), [create(CUSTOMER, "acme", "acme", 10, title="Acme")]),
    (
        object_stream(CUSTOMER, "globex"),
        [
            create(CUSTOMER, "globex", "globex", 11, title="Globex"),
            ObjectDeleted(kind=CUSTOMER, object_id="globex", time=12),
        ],
    ),
    (
        object_stream(INSIGHT, "i1"),
        [
            create(INSIGHT, "i1", "pool", 20, title="GPU", isGlobal=True, queueSize=0),
            ObjectUpdated(
                kind=INSIGHT,
                object_id="i1",
                changes={"title": "Big GPU", "queueSize": None},
                time=30,
            ),
        ],
    ),
    (
        object_stream(INSIGHT, "i2"),
        [create(INSIGHT, "i2", "pool", 20, allowedCustomerIds=["acme"], queueSize=4, rp="x")],
    ),
    (
        object_stream(INSIGHT, "I3"),
        [
            create(INSIGHT, "I3", "acme", 20, weight=1.5, big=1e20, on=True, tags={"a": 1}, rp="x"),
            ObjectUpdated(kind=INSIGHT, object_id="I3", changes={"customerId": "globex"}, time=40),
        ],
    ),
    (
        object_stream(AGENDA_TEMPLATE, "t1"),
        [create(AGENDA_TEMPLATE, "t1", "acme", 50, isGlobal="true", title="not really global")],
    ),
]


def agenda_history(agenda_id: str, customer: str, *more: Event, **params: Any) -> list[Event]:
    spec = agenda(op("a"), customer=customer, link_id="job-1", **params)
    insight = AgendaInsight(resource_pool_id="pool", insight_id="i1")
    first = submitted(spec, agenda_id=agenda_id, progress_id=f"p-{agenda_id}", insight=insight)
    return [first, *more]


AGENDAS: list[tuple[str, list[Event]]] = [
    (
        agenda_stream("a1"),
        agenda_history(
            "a1",
            "acme",
            OperationsGenerated(parent="a", operations=[op("b")], params={"more": 1}),
            AgendaUpdated(changes={"title": "renamed", "jobId": None, "cid": "no"}, time=99),
        ),
    ),
    (agenda_stream("a2"), agenda_history("a2", "globex", AgendaDeleted(time=98))),
    (agenda_stream("a3"), agenda_history("a3", "acme", doNotRun=True)),
]


async def record(subject: Subject, histories: Sequence[tuple[str, list[Event]]]) -> None:
    """Append each history as one request (a batch of several, as group commit does)."""
    requests = [AppendRequest(stream, 0, events) for stream, events in histories]
    await subject.events.append(requests)


async def everything(documents: DocumentReader) -> dict[tuple[str, str], Document]:
    found = {}
    for kind in sorted(DOCUMENT_KINDS):
        for doc in await documents.query(DocumentQuery(kind=kind, limit=1000)):
            found[doc.kind, doc.id] = doc
    return found


def ids(documents: Sequence[Document]) -> list[str]:
    return [d.id for d in documents]


# --- the tests ----------------------------------------------------------------------------------


async def test_the_documents_are_the_fold_of_the_events(subject: Subject) -> None:
    await record(subject, OBJECTS)
    await record(subject, AGENDAS)
    folded = MemoryDocumentStore()
    folded.apply(await subject.events.read_all(limit=1000))
    assert await everything(subject.documents) == await everything(folded)
    assert set(await everything(subject.documents)) == {
        (CUSTOMER, "acme"),
        (INSIGHT, "i1"),
        (INSIGHT, "i2"),
        (INSIGHT, "I3"),
        (AGENDA_TEMPLATE, "t1"),
        (AGENDA, "a1"),
        (AGENDA, "a3"),
    }
    assert await subject.documents.get(CUSTOMER, "globex") is None
    assert await subject.documents.get(AGENDA, "a2") is None
    assert await subject.documents.get(INSIGHT, "acme") is None


async def test_objects_and_agendas_read_as_pop_json(subject: Subject) -> None:
    await record(subject, OBJECTS)
    await record(subject, AGENDAS)
    i1 = await subject.documents.get(INSIGHT, "i1")
    assert i1 is not None
    assert (i1.customer_id, i1.version) == ("pool", 2)
    assert i1.body == {
        "id": "i1",
        "customerId": "pool",
        "title": "Big GPU",
        "isGlobal": True,
        "queueSize": 0,
        "addedTime": 20,
        "updatedTime": 30,
    }
    i3 = await subject.documents.get(INSIGHT, "I3")
    assert i3 is not None
    assert (i3.customer_id, i3.body["big"], i3.body["weight"]) == ("globex", 1e20, 1.5)
    a1 = await subject.documents.get(AGENDA, "a1")
    assert a1 is not None
    assert (a1.customer_id, a1.version) == ("acme", 3)
    assert [o["name"] for o in a1.body["operations"]] == ["a", "b"]
    assert (a1.body["title"], a1.body["params"], a1.body["updatedTime"]) == (
        "renamed",
        {"more": 1},
        99,
    )
    assert a1.body["agendaInsight"] == {"resourcePoolId": "pool", "insightId": "i1"}
    assert (a1.body["progressId"], a1.body["cid"], "jobId" in a1.body) == ("p-a1", "cid-1", False)


@pytest.mark.parametrize(
    ("equals", "expected"),
    [
        ((), ["I3", "i1", "i2"]),
        ((("rp", "x"),), ["I3", "i2"]),
        ((("queueSize", "4"),), ["i2"]),
        ((("queueSize", "0"),), ["i1"]),
        ((("weight", "1.5"),), ["I3"]),
        ((("big", "100000000000000000000"),), ["I3"]),
        ((("on", "true"),), ["I3"]),
        ((("isGlobal", "true"),), ["i1"]),
        ((("tags", '{"a": 1}'),), []),
        ((("tags", '{"a":1}'),), []),
        ((("missing", ""),), []),
        ((("rp", "x"), ("customerId", "globex")), ["I3"]),
        ((("rp", "X"),), []),
        ((("customerid", "globex"),), []),
    ],
)
async def test_queries_match_top_level_values_as_text(
    subject: Subject, equals: tuple[tuple[str, str], ...], expected: list[str]
) -> None:
    await record(subject, OBJECTS)
    query = DocumentQuery(kind=INSIGHT, equals=equals)
    assert ids(await subject.documents.query(query)) == expected
    assert await subject.documents.count(query) == len(expected)


async def test_listings_come_oldest_first_then_by_id_and_counts_ignore_the_limit(
    subject: Subject,
) -> None:
    await record(
        subject,
        [
            (object_stream(CUSTOMER, name), [create(CUSTOMER, name, name, time, title=name)])
            for name, time in [("b", 2), ("a", 2), ("Z", 2), ("é", 2), ("c", 1), ("d", 3)]
        ],
    )
    query = DocumentQuery(kind=CUSTOMER)
    assert ids(await subject.documents.query(query)) == ["c", "Z", "a", "b", "é", "d"]
    limited = DocumentQuery(kind=CUSTOMER, limit=2)
    assert ids(await subject.documents.query(limited)) == ["c", "Z"]
    assert await subject.documents.count(limited) == 6
    assert await subject.documents.query(DocumentQuery(kind=CUSTOMER, limit=0)) == []


@pytest.mark.parametrize(
    ("visibility", "insights", "templates"),
    [
        (None, ["I3", "i1", "i2"], ["t1"]),
        (Visibility(accounts=frozenset({"acme"})), [], ["t1"]),
        (Visibility(accounts=frozenset({"globex"})), ["I3"], []),
        (Visibility(accounts=frozenset({"globex"}), shared=True), ["I3", "i1"], []),
        (Visibility(accounts=frozenset({"ACME"}), shared=True), ["i1", "i2"], []),
        (Visibility(accounts=frozenset({"other", "acme"}), shared=True), ["i1", "i2"], ["t1"]),
        (Visibility(accounts=frozenset(), shared=True), ["i1"], []),
    ],
)
async def test_visibility_filters_before_the_limit_and_the_count(
    subject: Subject, visibility: Visibility | None, insights: list[str], templates: list[str]
) -> None:
    await record(subject, OBJECTS)
    for kind, expected in [(INSIGHT, insights), (AGENDA_TEMPLATE, templates)]:
        query = DocumentQuery(kind=kind, visible_to=visibility, limit=1)
        assert ids(await subject.documents.query(query)) == expected[:1]
        assert await subject.documents.count(query) == len(expected)
        everyone = DocumentQuery(kind=kind, visible_to=visibility)
        assert ids(await subject.documents.query(everyone)) == expected


async def test_owners_are_remembered_after_deletion(subject: Subject) -> None:
    await record(subject, OBJECTS)
    await record(subject, AGENDAS)
    streams = [
        object_stream(CUSTOMER, "globex"),
        object_stream(INSIGHT, "I3"),
        agenda_stream("a1"),
        agenda_stream("a2"),
        agenda_stream("never"),
    ]
    assert await subject.documents.owners(streams) == {
        object_stream(CUSTOMER, "globex"): "globex",
        object_stream(INSIGHT, "I3"): "globex",
        agenda_stream("a1"): "acme",
        agenda_stream("a2"): "globex",
    }
    assert await subject.documents.owners([]) == {}


async def test_a_rebuild_gives_the_same_rows(subject: Subject) -> None:
    await record(subject, OBJECTS)
    await record(subject, AGENDAS)
    streams = [stream for stream, _ in [*OBJECTS, *AGENDAS]]
    before = (await everything(subject.documents), await subject.documents.owners(streams))
    rows = await table_rows(subject)
    assert before[0]
    await forget_everything(subject)
    assert await everything(subject.documents) == {}
    await subject.documents.rebuild()
    after = (await everything(subject.documents), await subject.documents.owners(streams))
    assert after == before
    assert await table_rows(subject) == rows
    # The rebuilt projection keeps following the events.
    await record(subject, [(agenda_stream("a4"), agenda_history("a4", "acme"))])
    assert await subject.documents.get(AGENDA, "a4") is not None


async def forget_everything(subject: Subject) -> None:
    """Lose the projection's rows behind its back, so that only a real rebuild restores them."""
    if isinstance(subject.documents, MemoryDocumentStore):
        subject.documents._documents.clear()
        subject.documents._owners.clear()
    if subject.pool is not None:
        await subject.pool.execute(
            "DELETE FROM popflow.documents; DELETE FROM popflow.stream_owners"
        )


async def table_rows(subject: Subject) -> list[Any]:
    if subject.pool is None:
        return []
    documents = await subject.pool.fetch("SELECT * FROM popflow.documents ORDER BY kind, id")
    owners = await subject.pool.fetch("SELECT * FROM popflow.stream_owners ORDER BY stream_id")
    return [tuple(row) for row in [*documents, *owners]]


async def test_progress_documents_read_like_the_others(subject: Subject) -> None:
    await record(subject, AGENDAS)
    await ProjectionRunner(subject.events, subject.progress).catch_up()
    progress = await subject.progress.agenda_progress("a1")
    assert progress is not None
    doc = await subject.documents.get(AGENDA_PROGRESS, "p-a1")
    assert doc is not None
    assert (doc.kind, doc.id, doc.customer_id, doc.version) == (AGENDA_PROGRESS, "p-a1", "acme", 0)
    without_operations = msgspec.structs.replace(progress, operation_progress=None)
    assert doc.body == msgspec.to_builtins(without_operations)
    assert "operationProgress" not in doc.body

    operations = DocumentQuery(kind=OPERATION_PROGRESS, equals=(("agendaProgressId", "p-a1"),))
    found = await subject.documents.query(operations)
    assert ids(found) == ["p-a1-a", "p-a1-b"]
    assert [d.body for d in found] == msgspec.to_builtins(progress.operation_progress)
    assert await subject.documents.count(operations) == 2
    assert await subject.documents.get(OPERATION_PROGRESS, "p-a1-b") == found[1]

    agendas = DocumentQuery(kind=AGENDA_PROGRESS, equals=(("linkId", "job-1"),))
    assert sorted(ids(await subject.documents.query(agendas))) == ["p-a1", "p-a2", "p-a3"]
    visible = msgspec.structs.replace(
        agendas, visible_to=Visibility(accounts=frozenset({"globex"}))
    )
    assert ids(await subject.documents.query(visible)) == ["p-a2"]
    assert await subject.documents.count(visible) == 1
    assert await subject.documents.get(AGENDA_PROGRESS, "a1") is None


async def test_a_deleted_agenda_leaves_the_queue(subject: Subject) -> None:
    await record(
        subject,
        [
            (agenda_stream("kept"), agenda_history("kept", "acme")),
            (agenda_stream("gone"), agenda_history("gone", "acme")),
        ],
    )
    await subject.events.append([AppendRequest(agenda_stream("gone"), 1, [AgendaDeleted(time=5)])])
    assert [e.agenda_id for e in await subject.queue.entries()] == ["kept"]
    await subject.queue.rebuild()
    assert [e.agenda_id for e in await subject.queue.entries()] == ["kept"]
    await subject.queue.register(WorkerInfo("w1", "host", 1))
    assert [c.agenda_id for c in await subject.queue.claim("w1", 5)] == ["kept"]


# --- what routing reads -------------------------------------------------------------------------


def _created(kind: str, object_id: str, time: int, **document: Any) -> tuple[str, list[Event]]:
    return object_stream(kind, object_id), [create(kind, object_id, "ops", time, **document)]


def _pool_history() -> list[tuple[str, list[Event]]]:
    return [
        _created(RESOURCE_POOL, "farm", 1, title="Farm"),
        _created(CUSTOMER, "acme", 2, resourcePoolId="farm"),
        _created(CUSTOMER, "loner", 3, title="no pool"),
        _created(CUSTOMER, "lost", 4, resourcePoolId="gone"),
        # listed oldest first (addedTime), then by id, byte-wise
        _created(INSIGHT, "late", 30, resourcePoolId="farm"),
        _created(INSIGHT, "b", 20, resourcePoolId="farm"),
        _created(INSIGHT, "B", 20, resourcePoolId="farm"),
        _created(INSIGHT, "elsewhere", 10, resourcePoolId="other"),
    ]


async def test_routing_reads_the_customer_its_pool_and_the_pools_insights(
    subject: Subject,
) -> None:
    assert await subject.documents.routing("acme") == RoutingDocuments(
        customer=None, any_customer=False
    )
    await record(subject, _pool_history())
    await record(subject, AGENDAS)  # agendas and progress are not routing's business

    found = await subject.documents.routing("acme")
    assert found.customer is not None
    assert found.customer.body["resourcePoolId"] == "farm"
    assert found.any_customer
    assert ids(found.insights) == ["B", "b", "late"]
    assert found.pool is not None
    assert (found.pool.id, found.pool.body["title"]) == ("farm", "Farm")
    assert found.insights == await subject.documents.query(
        DocumentQuery(kind=INSIGHT, equals=(("resourcePoolId", "farm"),))
    )

    unknown = await subject.documents.routing("nobody")
    assert unknown == RoutingDocuments(customer=None, any_customer=True)
    no_pool = await subject.documents.routing("loner")
    assert (no_pool.customer is not None, no_pool.insights, no_pool.pool) == (True, [], None)
    missing_pool = await subject.documents.routing("lost")
    assert (missing_pool.insights, missing_pool.pool) == ([], None)
