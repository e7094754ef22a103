"""Routing an agenda to an insight: pop-spec §3.1, §1.5's mappers, §9.2 cases 17-21."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popflow.engine.routing import (
    CustomerNotFound,
    NoInsightAvailable,
    insight_matches,
    insight_visible_to,
    select_insight,
)
from popflow.errors import InvalidRequest, NotFound
from popflow.events.vocabulary import Agenda, AgendaInsight, Operation

CUSTOMER = {"id": "acme", "customerId": "acme", "title": "Acme", "resourcePoolId": "pool"}


def op(name: str = "probe", type: str = "mediainfo", **params: Any) -> Operation:  # noqa: A002 - POP's field name
    return Operation(name=name, type=type, params=params)


def agenda(*operations: Operation, customer: str = "acme", **params: Any) -> Agenda:
    return Agenda(customer_id=customer, operations=list(operations or [op()]), params=params)


def insight(
    insight_id: str, *, pool: str = "pool", owner: str = "farm", **fields: Any
) -> dict[str, Any]:
    fields.setdefault("isGlobal", True)
    fields.setdefault("title", f"Insight {insight_id}")
    return {"id": insight_id, "customerId": owner, "resourcePoolId": pool, **fields}


def routed(target: Agenda, *insights: dict[str, Any]) -> str:
    return select_insight(target, CUSTOMER, insights).insight_id


# --- each mapper (§1.5, §9.2 cases 17 and 18) ----------------------------------------------


@pytest.mark.parametrize(
    ("mappers", "target", "matches"),
    [
        ({"operationName": ["probe"]}, agenda(op("probe")), True),
        ({"operationName": ["PROBE"]}, agenda(op("Probe")), True),
        ({"operationName": ["encode"]}, agenda(op("probe", "encode")), False),  # not by type
        ({"operationName": ["encode"]}, agenda(op("probe"), op("encode")), True),  # any op
        ({"operationType": ["encoding"]}, agenda(op("x", "encoding")), True),
        ({"operationType": ["Encoding"]}, agenda(op("x", "ENCODING")), True),
        ({"operationType": ["encoding"]}, agenda(op("encoding", "x")), False),  # not by name
        ({"operationType": []}, agenda(op("x", "")), False),  # no values match nothing
        ({"OPERATIONTYPE": ["t"]}, agenda(op("x", "t")), True),  # mapper names ignore case
        ({"unknownMapper": ["probe"]}, agenda(op("probe")), False),
        ({"operationType": "mediainfo"}, agenda(op()), False),  # values must be a list
        ({"paramMap": ["myparam=mYvalue"]}, agenda(op(myparam="myvalue")), True),
        ({"paramMap": ["myparam=mYvalue"]}, agenda(op(), myparam="myvalue"), True),
        ({"paramMap": ["myotherparam=myvalue"]}, agenda(op(myparam="myvalue")), False),
        ({"paramMap": ["MyParam=v"]}, agenda(op(), MYPARAM="V"), True),
        ({"paramMap": ["myparam=v"]}, agenda(op(), op("b", other="x", myparam="v")), True),
        ({"paramMap": ["tier=gold"]}, agenda(op(tier="silver")), False),
        # values compare through their text: numbers and booleans in their JSON spelling
        ({"paramMap": ["retries=3"]}, agenda(op(), retries=3), True),
        ({"paramMap": ["ratio=1.5"]}, agenda(op(), ratio=1.5), True),
        ({"paramMap": ["fast=TRUE"]}, agenda(op(), fast=True), True),
        ({"paramMap": ["fast=false"]}, agenda(op(), fast=False), True),
        ({"paramMap": ["gone=null"]}, agenda(op(), gone=None), False),  # null never matches
        ({"operationType": ["nope"], "paramMap": ["tier=gold"]}, agenda(op(), tier="gold"), True),
        ({}, agenda(op()), False),
    ],
)
def test_an_insight_matches_when_any_value_of_any_mapper_matches(
    mappers: dict[str, Any], target: Agenda, matches: bool
) -> None:
    assert insight_matches(target, insight("i", mappers=mappers)) is matches


def test_an_insight_without_mappers_matches_nothing() -> None:
    assert not insight_matches(agenda(), insight("i"))
    assert not insight_matches(agenda(), insight("i", mappers=["operationType"]))


# --- paramMap entries that are not key=value ------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "params", "matches"),
    [
        ("key=", {"key": ""}, False),  # POP threw here; an empty value is ignored
        ("=v", {"": "v"}, False),  # an empty key is ignored
        ("key", {"key": "key"}, False),  # no "=" at all
        ("", {"": ""}, False),
        ("k=v=w", {"k": "v"}, True),  # POP kept the first two fields: k=v
        ("k=v=w", {"k": "v=w"}, False),
        ("k==v", {"k": "=v"}, False),  # the value field is empty
        ("k = v", {"k ": " v"}, True),  # no trimming: spaces are part of key and value
        ("k = v", {"k": "v"}, False),
    ],
)
def test_param_map_entries_follow_pop_and_malformed_ones_are_ignored(
    entry: str, params: dict[str, Any], matches: bool
) -> None:
    mappers = {"paramMap": [entry]}
    assert insight_matches(agenda(op(**params)), insight("i", mappers=mappers)) is matches


def test_a_malformed_param_map_entry_does_not_hide_a_good_one() -> None:
    mappers = {"paramMap": ["key=", "=v", "tier=gold"]}
    assert routed(agenda(op(tier="gold")), insight("i", mappers=mappers)) == "i"


# --- visibility of insights to the agenda's customer (§3.1 step 2) -------------------------

BY_TYPE = {"operationType": ["mediainfo"]}


@pytest.mark.parametrize(
    ("fields", "visible"),
    [
        ({"isGlobal": True}, True),
        ({"isGlobal": False}, False),
        ({"isGlobal": "true"}, False),  # only the JSON boolean counts
        ({"isGlobal": False, "owner": "acme"}, True),
        ({"isGlobal": False, "owner": "ACME"}, False),  # ownership is exact, as in POP
        ({"isGlobal": False, "allowedCustomerIds": ["other", "acme"]}, True),
        ({"isGlobal": False, "allowedCustomerIds": ["other"]}, False),
        ({"isGlobal": False, "allowedCustomerIds": "xacmex"}, False),  # not a substring test
        ({"isGlobal": False, "allowedCustomerIds": None}, False),
    ],
)
def test_only_insights_visible_to_the_agenda_customer_are_candidates(
    fields: dict[str, Any], visible: bool
) -> None:
    candidate = insight("i", mappers=BY_TYPE, **fields)
    assert insight_visible_to(candidate, "acme") is visible
    if visible:
        assert routed(agenda(), candidate) == "i"
    else:
        with pytest.raises(NoInsightAvailable):
            routed(agenda(), candidate)


def test_allowed_customer_ids_are_compared_lower_cased() -> None:
    allowed = insight("i", isGlobal=False, allowedCustomerIds=["acme"])
    assert insight_visible_to(allowed, "AcMe")


def test_visibility_is_the_agenda_customers_not_someone_elses() -> None:
    shared = insight("i", mappers=BY_TYPE, isGlobal=False, allowedCustomerIds=["other"])
    assert insight_visible_to(shared, "other")
    with pytest.raises(NoInsightAvailable):
        routed(agenda(), shared)


def test_only_insights_of_the_customers_pool_are_candidates() -> None:
    elsewhere = insight("elsewhere", pool="other-pool", mappers=BY_TYPE)
    home = insight("home", mappers=BY_TYPE)
    assert routed(agenda(), elsewhere, home) == "home"
    with pytest.raises(NoInsightAvailable):
        routed(agenda(), elsewhere)


def test_the_result_names_the_pool_and_the_insight() -> None:
    chosen = select_insight(agenda(), CUSTOMER, [insight("i", mappers=BY_TYPE)])
    assert chosen == AgendaInsight(resource_pool_id="pool", insight_id="i")


# --- several matches: defaultInsight and the order (§3.1 step 3, §9.2 case 20) -------------

INSIGHT_1 = insight(
    "id1", title="Title1", mappers={"operationName": ["N1"], "operationType": ["T1"]}
)
INSIGHT_2 = insight("id2", title="Title2", mappers={"operationType": ["T2A", "T2B"]})
EVERY_TYPE = (op("a", "T1"), op("b", "T2A"), op("c", "T2B"))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (agenda(op("N1", "x")), "id1"),
        (agenda(op("x", "T1")), "id1"),
        (agenda(op("x", "T2A")), "id2"),
        (agenda(*EVERY_TYPE), "id1"),  # no default: the first match
        (agenda(*EVERY_TYPE, defaultInsight="id2"), "id2"),
        (agenda(*EVERY_TYPE, defaultInsight="Title2"), "id2"),
        (agenda(*EVERY_TYPE, defaultInsight="TITLE2"), "id2"),
        (agenda(*EVERY_TYPE, defaultInsight="ID2"), "id2"),
        (agenda(*EVERY_TYPE, defaultInsight="Missing insight"), "id1"),
        (agenda(op("x", "T1"), defaultInsight="id2"), "id1"),  # a default must also match
    ],
)
def test_default_insight_picks_among_matches_else_the_first_match_wins(
    target: Agenda, expected: str
) -> None:
    assert routed(target, INSIGHT_1, INSIGHT_2) == expected


def test_a_default_insight_that_is_not_a_string_is_compared_through_its_text() -> None:
    numbered = insight("7", mappers=BY_TYPE)
    assert routed(agenda(defaultInsight=7), insight("first", mappers=BY_TYPE), numbered) == "7"


@given(st.permutations(["a", "b", "c", "d"]))
def test_without_a_default_the_first_match_in_the_given_order_wins(order: list[str]) -> None:
    insights = [insight(name, mappers=BY_TYPE) for name in order]
    assert routed(agenda(), *insights) == order[0]
    assert routed(agenda(), *insights) == routed(agenda(), *insights)  # the same every time


def test_non_matching_insights_before_the_first_match_are_skipped() -> None:
    other = insight("other", mappers={"operationType": ["transcode"]})
    assert routed(agenda(), other, insight("match", mappers=BY_TYPE)) == "match"


# --- no customer, no pool, no match (§2.4 step 2, §9.2 cases 21 and 23) --------------------


def test_an_unknown_customer_is_a_validation_failure() -> None:
    with pytest.raises(CustomerNotFound, match=r"^Customer not found for customerId acme$"):
        select_insight(agenda(), None, [insight("i", mappers=BY_TYPE)])
    assert issubclass(CustomerNotFound, InvalidRequest)


def test_a_customer_document_of_another_customer_is_not_the_agendas_customer() -> None:
    stranger = {**CUSTOMER, "customerId": "someone-else"}
    with pytest.raises(CustomerNotFound):
        select_insight(agenda(), stranger, [insight("i", mappers=BY_TYPE)])


@pytest.mark.parametrize("pool", [None, ""])
def test_a_customer_without_a_resource_pool_has_no_insight(pool: str | None) -> None:
    customer = {**CUSTOMER, "resourcePoolId": pool}
    with pytest.raises(NoInsightAvailable) as caught:
        select_insight(agenda(), customer, [insight("i", mappers=BY_TYPE)])
    assert str(caught.value) == (
        "No available insights for processing agenda. Customer acme has no resourcePoolId."
    )
    assert isinstance(caught.value, NotFound)


@pytest.mark.parametrize(
    ("insights", "why"),
    [
        ([], "There is no insight of resource pool pool visible to customer acme."),
        (
            [insight("hidden", isGlobal=False, mappers=BY_TYPE)],
            "There is no insight of resource pool pool visible to customer acme.",
        ),
        (
            [insight("i", mappers={"operationType": ["transcode"]})],
            "None of the mappers of the 1 insight of resource pool pool visible to customer"
            " acme matched.",
        ),
        (
            [insight("i"), insight("j", mappers={"operationName": ["x"]})],
            "None of the mappers of the 2 insights of resource pool pool visible to customer"
            " acme matched.",
        ),
    ],
)
def test_no_match_says_why(insights: list[dict[str, Any]], why: str) -> None:
    with pytest.raises(NoInsightAvailable) as caught:
        select_insight(agenda(), CUSTOMER, insights)
    assert str(caught.value) == f"No available insights for processing agenda. {why}"


# --- the pool's catch-all insight (pop-spec §10.6) -------------------------------------------

POOL = {"id": "pool", "customerId": "farm", "catchAllInsightId": "rest"}


def test_the_catch_all_takes_what_no_mapper_claims() -> None:
    insights = [
        insight("transcoding", mappers={"operationType": ["transcode"]}),
        insight("rest"),  # no mappers: it is chosen only as the catch-all
    ]
    chosen = select_insight(agenda(op("x", "package")), CUSTOMER, insights, POOL)
    assert chosen == AgendaInsight(resource_pool_id="pool", insight_id="rest")


def test_a_mapper_match_wins_over_the_catch_all() -> None:
    insights = [insight("rest"), insight("transcoding", mappers={"operationType": ["x"]})]
    chosen = select_insight(agenda(op("x", "x")), CUSTOMER, insights, POOL)
    assert chosen.insight_id == "transcoding"


@pytest.mark.parametrize(
    "catch_all",
    [
        insight("rest", isGlobal=False),  # not visible to acme
        insight("rest", pool="elsewhere"),  # not of the customer's pool
    ],
)
def test_a_catch_all_the_customer_may_not_use_is_refused_with_the_reason(
    catch_all: dict[str, Any],
) -> None:
    with pytest.raises(NoInsightAvailable, match="catch-all insight rest is not an insight"):
        select_insight(agenda(), CUSTOMER, [catch_all], POOL)


def test_a_catch_all_naming_no_insight_is_refused() -> None:
    with pytest.raises(NoInsightAvailable, match="catch-all insight rest"):
        select_insight(agenda(), CUSTOMER, [], POOL)


def test_without_a_catch_all_nothing_matching_is_refused() -> None:
    with pytest.raises(NoInsightAvailable, match="None of the mappers"):
        select_insight(agenda(), CUSTOMER, [insight("i", mappers={"operationType": ["x"]})], {})
