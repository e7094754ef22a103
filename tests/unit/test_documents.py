"""The document fold, the query rules and the memory document store, as table tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from popflow.engine.decide import Dispatch
from popflow.events.store import RecordedEvent
from popflow.events.vocabulary import (
    AgendaDeleted,
    AgendaUpdated,
    Event,
    ObjectCreated,
    ObjectDeleted,
    ObjectUpdated,
    OperationsGenerated,
    object_stream,
)
from popflow.projections.documents import (
    AGENDA,
    CUSTOMER,
    INSIGHT,
    Document,
    DocumentQuery,
    Visibility,
    fold_document,
    is_visible,
    select_documents,
    value_text,
)
from popflow.projections.memory_documents import MemoryDocumentStore
from popflow.projections.progress import epoch_ms
from tests.support.agendas import EPOCH, Scenario, agenda, op, recorded

INSIGHT_STREAM = object_stream(INSIGHT, "i1")


def created(**document: Any) -> ObjectCreated:
    return ObjectCreated(
        kind=INSIGHT, object_id="i1", customer_id="acme", document=document, time=100
    )


def updated(time: int = 200, **changes: Any) -> ObjectUpdated:
    return ObjectUpdated(kind=INSIGHT, object_id="i1", changes=changes, time=time)


def fold(events: Sequence[Event], stream: str) -> Document | None:
    doc = None
    for event in recorded(events, stream=stream):
        doc = fold_document(doc, event)
    return doc


# --- configuration objects ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "expected_body", "expected_owner", "expected_version"),
    [
        pytest.param(
            [created(title="gpu", id="ignored", customerId="ignored")],
            {
                "id": "i1",
                "customerId": "acme",
                "title": "gpu",
                "addedTime": 100,
                "updatedTime": 100,
            },
            "acme",
            1,
            id="created: id, owner and times are the server's",
        ),
        pytest.param(
            [created(title="gpu", queueSize=0), updated(title="big gpu", queueSize=None)],
            {
                "id": "i1",
                "customerId": "acme",
                "title": "big gpu",
                "queueSize": 0,
                "addedTime": 100,
                "updatedTime": 200,
            },
            "acme",
            2,
            id="updated: a sparse merge, nulls keep the stored value",
        ),
        pytest.param(
            [created(title="gpu"), updated(id="other", addedTime=1, isGlobal=True)],
            {
                "id": "i1",
                "customerId": "acme",
                "title": "gpu",
                "isGlobal": True,
                "addedTime": 100,
                "updatedTime": 200,
            },
            "acme",
            2,
            id="updated: id and addedTime never move",
        ),
        pytest.param(
            [created(), updated(customerId="globex")],
            {"id": "i1", "customerId": "globex", "addedTime": 100, "updatedTime": 200},
            "globex",
            2,
            id="updated: the owner follows customerId",
        ),
        pytest.param(
            [created(), updated(customerId=7)],
            {"id": "i1", "customerId": 7, "addedTime": 100, "updatedTime": 200},
            "acme",
            2,
            id="updated: a customerId that is not a string leaves the owner",
        ),
    ],
)
def test_object_documents(
    events: list[Event],
    expected_body: dict[str, Any],
    expected_owner: str,
    expected_version: int,
) -> None:
    doc = fold(events, INSIGHT_STREAM)
    assert doc is not None
    assert (doc.kind, doc.id) == (INSIGHT, "i1")
    assert doc.body == expected_body
    assert (doc.customer_id, doc.version) == (expected_owner, expected_version)


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(
            [created(), ObjectDeleted(kind=INSIGHT, object_id="i1", time=300)], id="deleted"
        ),
        pytest.param([updated(title="x")], id="an update of nothing creates nothing"),
    ],
)
def test_objects_that_do_not_exist(events: list[Event]) -> None:
    assert fold(events, INSIGHT_STREAM) is None


# --- agendas -----------------------------------------------------------------------------------


def submitted_agenda() -> Scenario:
    spec = agenda(op("a"), op("b", dependsOn="a"), link_id="job-1", priority=2)
    return Scenario(msgspec.structs.replace(spec, title="nightly"), agenda_id="a-1")


def agenda_events(*more: Event) -> list[RecordedEvent]:
    """The scenario's events in the stream ``agenda-a-1``: recorded_at = EPOCH + version ms."""
    return recorded([*submitted_agenda().events, *more])


def fold_agenda(*more: Event) -> Document | None:
    doc = None
    for event in agenda_events(*more):
        doc = fold_document(doc, event)
    return doc


def test_a_submitted_agenda_is_its_pop_json_with_the_server_fields() -> None:
    doc = fold_agenda()
    assert doc is not None
    at = epoch_ms(EPOCH) + 1
    assert (doc.kind, doc.id, doc.customer_id, doc.version) == (AGENDA, "a-1", "acme", 1)
    assert doc.body == {
        "id": "a-1",
        "customerId": "acme",
        "cid": "cid-1",
        "linkId": "job-1",
        "title": "nightly",
        "params": {"priority": 2},
        "operations": [
            {"name": "a", "type": "sample"},
            {"name": "b", "type": "sample", "params": {"dependsOn": "a"}},
        ],
        "progressId": "p-1",
        "agendaInsight": {"resourcePoolId": "default", "insightId": "default"},
        "addedTime": at,
        "updatedTime": at,
    }


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(
            OperationsGenerated(parent="a", operations=[op("c")], params={"extra": True}),
            {
                "operations": ["a", "b", "c"],
                "params": {"priority": 2, "extra": True},
                "updatedTime": epoch_ms(EPOCH) + 2,
            },
            id="generated operations are appended, params merged",
        ),
        pytest.param(
            OperationsGenerated(parent="a", operations=[op("c")]),
            {"operations": ["a", "b", "c"], "params": {"priority": 2}},
            id="generated without params keeps them",
        ),
        pytest.param(
            AgendaUpdated(
                changes={"title": None, "linkId": "job-2", "params": {"x": 1}, "cid": "no"},
                time=777,
            ),
            {
                "title": "nightly",
                "linkId": "job-2",
                "params": {"x": 1},
                "cid": "cid-1",
                "updatedTime": 777,
            },
            id="updated: descriptive fields only, nulls ignored, params replaced",
        ),
    ],
)
def test_agenda_changes(event: Event, expected: dict[str, Any]) -> None:
    doc = fold_agenda(event)
    assert doc is not None
    assert doc.version == 2
    seen = {**doc.body, "operations": [o["name"] for o in doc.body["operations"]]}
    assert {k: seen[k] for k in expected} == expected
    assert doc.body["addedTime"] == epoch_ms(EPOCH) + 1


def test_a_deleted_agenda_has_no_document() -> None:
    assert fold_agenda(AgendaDeleted(time=5)) is None


def test_other_agenda_events_leave_the_document_alone() -> None:
    s = submitted_agenda()
    s.do(Dispatch("w1"))
    [first, dispatched] = recorded(s.events)
    doc = fold_document(None, first)
    assert fold_document(doc, dispatched) is doc


def test_times_are_exact_milliseconds() -> None:
    # A float product lands one millisecond short on this instant; PostgreSQL does not.
    moment = datetime(2004, 2, 8, 7, 49, 54, 837000, tzinfo=UTC)
    assert int(moment.timestamp() * 1000) == 1076226594836
    assert epoch_ms(moment) == 1076226594837


# --- owners, through the memory store ------------------------------------------------------------


async def test_owners_outlive_deletion_and_follow_updates() -> None:
    store = MemoryDocumentStore()
    customer = object_stream(CUSTOMER, "acme")
    store.apply(agenda_events(AgendaDeleted(time=5)))
    store.apply(
        recorded(
            [
                ObjectCreated(
                    kind=CUSTOMER, object_id="acme", customer_id="acme", document={}, time=1
                ),
                ObjectUpdated(kind=CUSTOMER, object_id="acme", changes={"customerId": "x"}, time=2),
            ],
            stream=customer,
        )
    )
    assert await store.owners(["agenda-a-1", customer, "agenda-nope"]) == {
        "agenda-a-1": "acme",
        customer: "x",
    }
    assert await store.get(AGENDA, "a-1") is None
    await store.rebuild()
    assert await store.owners(["agenda-a-1", customer]) == {"agenda-a-1": "acme", customer: "x"}
    assert await store.get(CUSTOMER, "acme") is not None


# --- query rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Acme", "Acme"),
        ("", ""),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-3, "-3"),
        (1.5, "1.5"),
        (3.0, "3.0"),
        (1e20, "100000000000000000000"),
        (1e-7, "0.0000001"),
        (None, None),
        ({"a": 1}, None),
        (["a"], None),
    ],
)
def test_value_text_is_postgres_spelling(value: Any, text: str | None) -> None:
    assert value_text(value) == text


def doc(customer: str = "acme", doc_id: str = "d", added: int = 1, **body: Any) -> Document:
    return Document(
        kind=INSIGHT,
        id=doc_id,
        customer_id=customer,
        version=1,
        body={"customerId": customer, "addedTime": added, **body},
    )


@pytest.mark.parametrize(
    ("document", "visibility", "visible"),
    [
        (doc(), None, True),
        (doc(), Visibility(accounts=frozenset({"acme"})), True),
        (doc(), Visibility(accounts=frozenset({"ACME"}), shared=True), False),
        (doc(isGlobal=True), Visibility(accounts=frozenset({"x"})), False),
        (doc(isGlobal=True), Visibility(accounts=frozenset({"x"}), shared=True), True),
        (doc(isGlobal="true"), Visibility(accounts=frozenset({"x"}), shared=True), False),
        (doc(allowedCustomerIds=["x"]), Visibility(accounts=frozenset({"X"}), shared=True), True),
        (doc(allowedCustomerIds=["X"]), Visibility(accounts=frozenset({"X"}), shared=True), False),
        (doc(allowedCustomerIds="x"), Visibility(accounts=frozenset({"x"}), shared=True), False),
        (doc(allowedCustomerIds=["x"]), Visibility(accounts=frozenset({"x"})), False),
    ],
)
def test_visibility(document: Document, visibility: Visibility | None, visible: bool) -> None:
    assert is_visible(document, visibility) is visible


def test_selection_filters_orders_oldest_first_and_limits() -> None:
    docs = [
        doc(doc_id="b", added=2, size=1),
        doc(doc_id="a", added=2, size=1),
        doc(doc_id="Z", added=2, size=1),
        doc(doc_id="c", added=1, size=1),
        doc(doc_id="d", added=0, size="1.0"),
        doc(customer="other", doc_id="e", added=0, size=1),
    ]
    query = DocumentQuery(
        kind=INSIGHT, equals=(("size", "1"),), visible_to=Visibility(accounts=frozenset({"acme"}))
    )
    assert [d.id for d in select_documents(docs, query)] == ["c", "Z", "a", "b"]
    limited = msgspec.structs.replace(query, limit=2)
    assert [d.id for d in select_documents(docs, limited)] == ["c", "Z"]
    assert select_documents(docs, msgspec.structs.replace(query, kind=AGENDA)) == []
