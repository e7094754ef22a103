"""Expanding an agenda template with a payload: pop-spec §2.5 and §9.2 cases 10-12."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popflow.engine.templates import expand_template
from popflow.errors import InvalidRequest


def template(agenda: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": "t1", "customerId": "acme", "title": "Encode", "agenda": agenda, **fields}


def payload_of(agenda: dict[str, Any], payload: Any, **fields: Any) -> Any:
    """What the references in ``agenda["payload"]`` become (title and cid aside)."""
    return expand_template(template(agenda, **fields), payload, cid=None)["payload"]


# --- the wiki's example and POP's acceptance cases ------------------------------------------


def test_the_wiki_example_reads_a_field_of_the_payload_without_a_leading_slash() -> None:
    agenda = expand_template(
        {"agenda": {"params": {"payload": "@<pop.payload::title>"}}}, {"title": "xyz"}, cid=None
    )
    assert agenda == {"params": {"payload": "xyz"}}


def test_case_10_static_parameters_and_inputs_are_substituted_and_nothing_else_changes() -> None:
    body = {
        "customerId": "acme",
        "params": {"maximumAttempts": 2},
        "operations": [
            {
                "name": "encode",
                "type": "ffmpeg",
                "payload": {
                    "file": "@<pop.payload::/sourceFile>",
                    "rawsData": "@<pop.transformRequest::/rawsData>",
                    "processorVersion": "@<accelerateEncodeProcessorVersion>",
                },
            }
        ],
    }
    inputs = {"sourceFile": {"file": "coolestdog.mp4"}, "rawsData": "<xml>This is RAWS Data</xml>"}
    static = {"accelerateEncodeProcessorVersion": "1.5"}
    agenda = expand_template(template(body, staticParameters=static), inputs, cid=None)
    assert agenda["operations"][0]["payload"] == {
        "file": {"file": "coolestdog.mp4"},
        "rawsData": "<xml>This is RAWS Data</xml>",
        "processorVersion": "1.5",
    }
    assert {k: v for k, v in agenda.items() if k != "operations"} == {
        "customerId": "acme",
        "params": {"maximumAttempts": 2},
        "title": "Encode",
    }
    assert {k: v for k, v in agenda["operations"][0].items() if k != "payload"} == {
        "name": "encode",
        "type": "ffmpeg",
    }


def test_case_12_a_pointer_into_the_payload() -> None:
    assert payload_of({"payload": "@<pop.payload::/value>"}, {"value": "1234"}) == "1234"


def test_case_12_a_template_without_references_ignores_the_payload() -> None:
    body = {"customerId": "acme", "operations": [{"name": "a", "type": "t", "payload": {}}]}
    assert expand_template(template(body), {}, cid=None) == {**body, "title": "Encode"}


# --- the reference rules of §4.3 -----------------------------------------------------------

PAYLOAD = {"source": {"url": "s3://in/a.mp4", "width": 720}, "tags": ["a", "b"], "hdr": True}


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("@<pop.payload>", PAYLOAD),  # the whole payload, as an object
        ("@<pop.payload::/>", PAYLOAD),
        ("@<pop.payload::/source>", PAYLOAD["source"]),
        ("@<pop.payload::/tags>", ["a", "b"]),
        ("@<pop.payload::/source/width>", 720),  # typed: a number stays a number
        ("@<pop.payload::/hdr>", True),  # booleans too (POP kept the string)
        ("@<pop.payload::source/url>", "s3://in/a.mp4"),
        ("@<pop.payload::/missing?>", None),
        ("@<pop.payload::/missing?800k>", "800k"),
        ("@<pop.payload::/source/width?800>", 720),  # the default is for absent fields only
        ("in: @<pop.payload::/source/url>", "in: s3://in/a.mp4"),
        ("@<pop.payload::/source/width>x@<pop.payload::/hdr>", "720xtrue"),
        ("-@<pop.payload::/missing?95>-", "-95-"),
        ("-@<pop.payload::/missing?>", "-null"),
    ],
)
def test_references_to_parameters_follow_the_run_time_rules(reference: str, expected: Any) -> None:
    assert payload_of({"payload": reference}, PAYLOAD) == expected


def test_references_are_replaced_throughout_the_agenda_but_never_in_keys() -> None:
    body = {
        "title": "@<pop.payload::/name>",
        "params": {"@<pop.payload::/name>": ["@<pop.payload::/name>", {"deep": "@<p>"}]},
        "operations": [{"name": "a", "type": "t", "payload": ["x", "@<p>", 3, None]}],
    }
    agenda = expand_template(template(body, staticParameters={"p": 1}), {"name": "n"}, cid=None)
    assert agenda == {
        "title": "n",
        "params": {"@<pop.payload::/name>": ["n", {"deep": 1}]},
        "operations": [{"name": "a", "type": "t", "payload": ["x", 1, 3, None]}],
    }


@pytest.mark.parametrize(
    "reference",
    [
        "@<probe.out>",
        "@<probe.out::/width>",
        "@<pop.agendaId>",
        "@<pop.operationName>",
        "s3://out/@<pop.agendaId>/@<probe.out::/name?x>.mp4",
    ],
)
def test_references_that_are_not_parameters_are_left_for_run_time(reference: str) -> None:
    assert payload_of({"payload": reference}, PAYLOAD) == reference


def test_a_composite_string_mixes_parameters_and_run_time_references() -> None:
    reference = "@<pop.payload::/source/url> to s3://out/@<pop.agendaId>/@<encode.out::/name>"
    expected = "s3://in/a.mp4 to s3://out/@<pop.agendaId>/@<encode.out::/name>"
    assert payload_of({"payload": reference}, PAYLOAD) == expected


def test_a_substituted_payload_is_not_itself_resolved_again() -> None:
    assert payload_of({"payload": "@<pop.payload>"}, {"x": "@<p>"}, staticParameters={"p": 1}) == {
        "x": "@<p>"
    }


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("@<pop.payload::/missing>", "@<pop.payload::/missing>"),
        ("@<pop.payload::missing>", "@<pop.payload::/missing>"),
        ("x-@<pop.payload::/source>-x", "pop.payload cannot be used in composite string"),
    ],
)
def test_a_reference_to_a_parameter_that_cannot_resolve_is_refused(
    reference: str, problem: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        payload_of({"payload": reference}, PAYLOAD)
    assert caught.value.problems == (f"AgendaTemplate [Encode] has invalid references: {problem}",)


# --- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pop.payload", "pop.transformRequest"])
def test_case_11_a_static_parameter_named_like_an_input_is_duplicated(name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        payload_of({"payload": "x"}, {}, staticParameters={name: 1})
    assert caught.value.problems == (f"Parameter [{name}] is duplicated.",)


def test_every_duplicated_parameter_is_reported() -> None:
    static = {"pop.payload": 1, "pop.transformRequest": 2, "other": 3}
    with pytest.raises(InvalidRequest) as caught:
        payload_of({"payload": "x"}, {}, staticParameters=static)
    assert caught.value.problems == (
        "Parameter [pop.payload] is duplicated.",
        "Parameter [pop.transformRequest] is duplicated.",
    )


def test_parameter_names_are_case_sensitive() -> None:
    static = {"POP.PAYLOAD": "static"}
    assert payload_of({"payload": "@<POP.PAYLOAD>"}, "input", staticParameters=static) == "static"


@pytest.mark.parametrize("static", [None, {}])
def test_static_parameters_are_optional(static: dict[str, Any] | None) -> None:
    assert payload_of({"payload": "@<pop.payload>"}, 5, staticParameters=static) == 5


def test_static_parameters_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest, match=r"staticParameters is not an object"):
        payload_of({"payload": "x"}, {}, staticParameters=["a"])


# --- post-processing: title, cid, server-assigned fields ------------------------------------


@pytest.mark.parametrize(
    ("agenda", "cid", "expected"),
    [
        ({}, "c1", {"title": "Encode", "cid": "c1"}),
        ({"title": None, "cid": None}, "c1", {"title": "Encode", "cid": "c1"}),
        ({"title": "Mine", "cid": "mine"}, "c1", {"title": "Mine", "cid": "mine"}),
        ({}, None, {"title": "Encode"}),
        ({"id": "a1", "progressId": "p1", "linkId": "l"}, None, {"title": "Encode", "linkId": "l"}),
    ],
)
def test_title_and_cid_default_and_server_assigned_fields_are_removed(
    agenda: dict[str, Any], cid: str | None, expected: dict[str, Any]
) -> None:
    assert expand_template(template(agenda), {}, cid=cid) == expected


def test_a_template_without_a_title_leaves_the_title_unset() -> None:
    assert expand_template({"agenda": {}}, {}, cid=None) == {}


def test_the_title_default_is_not_resolved() -> None:
    agenda = expand_template({"title": "@<pop.payload>", "agenda": {}}, "x", cid=None)
    assert agenda == {"title": "@<pop.payload>"}


@pytest.mark.parametrize(
    ("fields", "name"), [({"agenda": None}, "[Encode]"), ({"title": None, "agenda": []}, "[t1]")]
)
def test_a_template_without_an_agenda_object_is_refused(fields: dict[str, Any], name: str) -> None:
    body = {"id": "t1", "title": "Encode", **fields}
    with pytest.raises(InvalidRequest) as caught:
        expand_template(body, {}, cid=None)
    assert caught.value.problems == (f"AgendaTemplate {name} has no agenda object.",)


# --- the result is independent of its inputs ------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=10,
)


@given(JSON_VALUES)
def test_the_result_shares_nothing_with_the_template_or_the_payload(payload: Any) -> None:
    static = {"fixed": {"list": [1, 2]}}
    source = template(
        {"payload": {"a": "@<pop.payload>", "b": "@<pop.transformRequest>", "c": "@<fixed>"}},
        staticParameters=static,
    )
    before = copy.deepcopy((source, payload))
    agenda = expand_template(source, payload, cid=None)
    assert agenda["payload"] == {"a": payload, "b": payload, "c": static["fixed"]}
    agenda["payload"]["c"]["list"].append(3)
    if isinstance(agenda["payload"]["a"], dict | list):
        agenda["payload"]["a"].clear()
    assert agenda["payload"]["b"] == payload  # the two inputs are not one shared object
    assert (source, payload) == before
