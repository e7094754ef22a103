"""References: pop-spec §9.2 cases 1-9 re-expressed, popflow's improvements, and properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popflow.engine.references import (
    AGENDA_ID_TOKEN,
    OPERATION_NAME_TOKEN,
    Reference,
    Resolution,
    find_references,
    is_token,
    json_pointer,
    output_name,
    parse_pointer,
    reference_text,
    referenced_operation,
    resolve,
)

# --- §9.2 case 1: parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "path"),
    [
        ("@<mediainfo.1::/>", "mediainfo.1", "/"),
        ("@<mediainfo.1::/test/sub/path>", "mediainfo.1", "/test/sub/path"),
        ("@<mediainfo.1>", "mediainfo.1", None),
        ("@<a::b::c>", "a", "b::c"),  # the lazy name stops at the first "::"
        ("@<a::>", "a::", None),  # a path needs at least one character
        ("@<a:b>", "a:b", None),
    ],
)
def test_case_1_a_reference_is_parsed_into_name_and_path(
    text: str, name: str, path: str | None
) -> None:
    assert find_references(text) == [Reference(name, path, text)]


def test_references_are_found_in_every_string_in_document_order_but_never_in_keys() -> None:
    value = {"@<key>": ["@<a>", {"deep": "x @<b::/p> y @<c>"}], "n": 1, "t": True, "z": None}
    assert [r.text for r in find_references(value)] == ["@<a>", "@<b::/p>", "@<c>"]


def test_a_value_without_strings_has_no_references() -> None:
    assert find_references({"a": [1, 2.5, None, False]}) == []


# --- §9.2 case 2: whole objects and typed numbers ------------------------------------------

MEDIAINFO = {"mediainfo.1.out": {"mediaProperties": {"width": 720, "height": 480}}}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("@<mediainfo.1.out::/>", {"mediaProperties": {"width": 720, "height": 480}}),
        ("@<mediainfo.1.out::/mediaProperties/width>", 720),
    ],
)
def test_case_2_a_whole_string_reference_gives_the_typed_value(payload: str, expected: Any) -> None:
    assert resolve(payload, MEDIAINFO) == Resolution(expected)


# --- §9.2 case 3: array elements ------------------------------------------------------------

ENCODE = {"id": "encode", "type": "ffmpeg"}
PACKAGE = {"id": "package", "type": "packager"}
ANALYSIS = {"analysis.1.out": {"operations": [ENCODE, PACKAGE]}}


def test_case_3_array_elements_are_replaced_in_place() -> None:
    payload = ["@<analysis.1.out::/operations/1>", "@<analysis.1.out::/operations/0>"]
    assert resolve(payload, ANALYSIS).value == [PACKAGE, ENCODE]


def test_case_3_a_pointer_into_an_array_element() -> None:
    assert resolve("@<analysis.1.out::/operations/0/id>", ANALYSIS).value == "encode"


# --- §9.2 case 4: plain values --------------------------------------------------------------

BASIC = {"basicString": "a value", "theNumber": 42, "agendaId": "456-789"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("@<basicString>", "a value"),
        ("@<theNumber>", 42),
        ("x@<basicString>y", "xa valuey"),
        ("@<agendaId>", "456-789"),
    ],
)
def test_case_4_plain_values(payload: str, expected: Any) -> None:
    assert resolve(payload, BASIC) == Resolution(expected)


# --- §9.2 case 5: composite strings ---------------------------------------------------------

SAMPLES = {"sampleValue": "85", "sampleValue2": "95"}


@pytest.mark.parametrize(
    ("payload", "expected", "missing"),
    [
        ("85", "85", ()),
        ("@<sampleValue>", "85", ()),
        ("@<sampleValue><xmltag>45</xmltag>", "85<xmltag>45</xmltag>", ()),
        (
            "@<sampleValueX><xmltag>45</xmltag>",
            "@<sampleValueX><xmltag>45</xmltag>",
            ("@<sampleValueX>",),
        ),
        ("@<sampleValueX>", "@<sampleValueX>", ("@<sampleValueX>",)),
        ("--@<sampleValueX>", "--@<sampleValueX>", ("@<sampleValueX>",)),
        ("--@<sampleValueX>--", "--@<sampleValueX>--", ("@<sampleValueX>",)),
        (
            "--@<sampleValueZ>----@<sampleValueB>--",
            "--@<sampleValueZ>----@<sampleValueB>--",
            ("@<sampleValueZ>", "@<sampleValueB>"),
        ),
        ("--@<sampleValue>--@<sampleValue2>", "--85--95", ()),
        ("@<sampleValue3>--@<sampleValue2>--", "@<sampleValue3>--95--", ("@<sampleValue3>",)),
    ],
)
def test_case_5_composite_strings(payload: str, expected: str, missing: tuple[str, ...]) -> None:
    assert resolve(payload, SAMPLES) == Resolution(expected, missing=missing)


# --- §9.2 case 6: an object cannot be embedded in text --------------------------------------


def test_case_6_an_object_in_a_composite_string_is_invalid_and_the_string_is_kept() -> None:
    context = {"sampleValue": {"testField": {"theField": "theValue"}}}
    result = resolve({"testField": "-@<sampleValue::/testField>-"}, context)
    assert result.value == {"testField": "-@<sampleValue::/testField>-"}
    assert result.invalid == ("sampleValue cannot be used in composite string",)
    assert result.missing == ()


def test_an_embedded_object_is_kept_while_the_other_references_of_the_string_resolve() -> None:
    result = resolve("@<obj>/@<n>", {"obj": {"a": 1}, "n": 7})
    assert result.value == "@<obj>/7"
    assert result.invalid == ("obj cannot be used in composite string",)


# --- §9.2 case 7: pointers without a leading slash, defaults --------------------------------

SUB_ITEMS = {"sampleValue": {"subItem": {"item": "55", "item2": {"leaf": "node"}, "item3": "45"}}}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("@<sampleValue::subItem/item>-", "55-"),
        ("@<sampleValue::subItem/item2/leaf>-", "node-"),
        ("-@<sampleValue::subItem/item2/leaf>-", "-node-"),
        ("@<sampleValue::subItem/item3>", "45"),
        ("@<sampleValue::subItem/item3/nothere?95>", "95"),
        ("-@<sampleValue::subItem/item3/nothere?95>", "-95"),
        ("@<sampleValue::subItem/item3?95>", "45"),  # the default is unused when the path exists
        ("-@<sampleValue::/wrongitem?95>", "-95"),
        ("-@<sampleValue::/wrongitem?>", "-null"),
        ("@<sampleValue::/wrongitem?>", None),
    ],
)
def test_case_7_sub_references_and_defaults(payload: str, expected: Any) -> None:
    assert resolve(payload, SUB_ITEMS) == Resolution(expected)


# --- §9.2 case 8: lookup outcomes -----------------------------------------------------------

SAMPLE = [{"test": "a"}, {"test": "b"}]


@pytest.mark.parametrize(
    ("payload", "expected", "missing", "invalid"),
    [
        ("@<other>", "@<other>", ("@<other>",), ()),
        ("@<sample::/1/test>", "b", (), ()),
        ("@<sample::/2/test>", "@<sample::/2/test>", (), ("@<sample::/2/test>",)),
        ("@<sample::/>", SAMPLE, (), ()),
        ("@<sample>", SAMPLE, (), ()),
        ("@<sample::/unknown>", "@<sample::/unknown>", (), ("@<sample::/unknown>",)),
    ],
)
def test_case_8_lookup(
    payload: str, expected: Any, missing: tuple[str, ...], invalid: tuple[str, ...]
) -> None:
    assert resolve(payload, {"sample": SAMPLE}) == Resolution(expected, missing, invalid)


def test_a_missing_reference_is_recorded_with_its_path() -> None:
    assert resolve("@<probe.out::/width?0>", {}).missing == ("@<probe.out::/width?0>",)


def test_an_invalid_pointer_is_recorded_with_the_leading_slash_added() -> None:
    assert resolve("@<sample::2/test>", {"sample": SAMPLE}).invalid == ("@<sample::/2/test>",)


# --- §9.2 case 9: null in the context is a value --------------------------------------------


def test_case_9_a_null_context_value_is_a_value_not_a_missing_reference() -> None:
    assert resolve({"a": "@<foo>", "b": "x@<foo>"}, {"foo": None}) == Resolution(
        {"a": None, "b": "xnull"}
    )


def test_json_text_in_the_context_is_only_a_string_the_caller_decodes_outputs() -> None:
    result = resolve("@<op.out::/a>", {"op.out": '{"a": 1}'})
    assert result.invalid == ("@<op.out::/a>",)


# --- improvements over the original (pop-spec §10 item 22) ----------------------------------


@pytest.mark.parametrize("flag", [True, False])
def test_a_whole_string_reference_to_a_boolean_gives_the_boolean(flag: bool) -> None:
    assert resolve({"enabled": "@<flag>"}, {"flag": flag}).value == {"enabled": flag}


@pytest.mark.parametrize(
    ("value", "text"), [(True, "true"), (False, "false"), (None, "null"), (1.5, "1.5"), (-3, "-3")]
)
def test_an_embedded_scalar_is_replaced_by_its_json_text(value: Any, text: str) -> None:
    assert resolve("v=@<x>;", {"x": value}).value == f"v={text};"


def test_a_root_level_string_payload_is_resolved() -> None:
    context = {AGENDA_ID_TOKEN: "a-1", "probe.out": {"width": 720}}
    assert resolve("@<probe.out>", context).value == {"width": 720}
    assert resolve("/mnt/agenda-@<pop.agendaId>/in", context).value == "/mnt/agenda-a-1/in"


def test_a_string_is_one_reference_only_when_its_first_reference_spans_it() -> None:
    # Java's matches() read this as one reference named "a>x@<b"; it is two.
    assert resolve("@<a>x@<b>", {"a": 1, "b": 2}).value == "1x2"


def test_each_problem_is_reported_once() -> None:
    result = resolve(["@<gone>", "@<gone>", "x@<gone>", "@<s::/no>", "@<s::/no>"], {"s": {}})
    assert result.missing == ("@<gone>",)
    assert result.invalid == ("@<s::/no>",)


def test_an_inserted_value_is_not_scanned_again() -> None:
    assert resolve("@<a>-@<b>", {"a": "@<b>", "b": "B"}).value == "@<b>-B"


def test_keys_are_never_replaced() -> None:
    assert resolve({"@<k>": "@<k>"}, {"k": "v"}).value == {"@<k>": "v"}


def test_the_key_order_of_objects_is_kept() -> None:
    assert list(resolve({"z": 1, "a": "@<x>", "m": 2}, {"x": 0}).value) == ["z", "a", "m"]


def test_completeness() -> None:
    assert resolve("@<x>", {"x": 1}).complete
    assert not resolve("@<x>", {}).complete
    assert not resolve("@<x::/a>", {"x": {}}).complete


def test_a_deeply_nested_payload_does_not_exhaust_the_stack() -> None:
    depth = 5_000
    value: Any = "@<x>"
    for _ in range(depth):
        value = [value]
    node = resolve(value, {"x": 1}).value
    for _ in range(depth):
        node = node[0]
    assert node == 1
    assert len(find_references(value)) == 1


# --- RFC 6901 pointers ----------------------------------------------------------------------

DOCUMENT = {"a/b": 1, "m~n": 2, "": 3, "list": [10, 20], "nested": {"k": None}}


@pytest.mark.parametrize(
    ("pointer", "found", "value"),
    [
        ("", True, DOCUMENT),
        ("/a~1b", True, 1),
        ("/m~0n", True, 2),
        ("/", True, 3),
        ("/list/0", True, 10),
        ("/list/1", True, 20),
        ("/list/2", False, None),
        ("/list/-", False, None),
        ("/list/01", False, None),
        ("/list/x", False, None),
        ("/nested/k", True, None),
        ("/nested/k/deeper", False, None),
        ("/missing", False, None),
        ("no-slash", False, None),
        ("/bad~2escape", False, None),
    ],
)
def test_json_pointer(pointer: str, found: bool, value: Any) -> None:
    assert json_pointer(DOCUMENT, pointer) == (found, value)


def test_pointer_escapes_are_decoded_in_rfc_order() -> None:
    assert parse_pointer("/~01") == ["~1"]  # not "/": "~1" is decoded before "~0"


@pytest.mark.parametrize("pointer", ["x", "/a~", "/a~2"])
def test_a_malformed_pointer_is_rejected_by_parse_pointer(pointer: str) -> None:
    with pytest.raises(ValueError, match="JSON pointer"):
        parse_pointer(pointer)


def test_a_reference_path_uses_rfc_6901_escapes() -> None:
    assert resolve("@<doc::/a~1b>", {"doc": DOCUMENT}).value == 1


# --- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference_name", "operation"),
    [
        ("probe.out", "probe"),
        ("x.output.out", "x.output"),  # pop-spec §10 item 25: only a trailing .out
        ("x.output", None),
        ("out.probe", None),
        ("probe.OUT", None),
        (".out", None),
        ("pop.agendaId", None),
    ],
)
def test_referenced_operation(reference_name: str, operation: str | None) -> None:
    assert referenced_operation(reference_name) == operation


def test_output_name_and_tokens() -> None:
    assert output_name("probe") == "probe.out"
    assert is_token(AGENDA_ID_TOKEN)
    assert is_token(OPERATION_NAME_TOKEN)
    assert not is_token("probe.out")
    assert reference_text("a.out") == "@<a.out>"
    assert reference_text("a.out", "/x?1") == "@<a.out::/x?1>"


# --- properties -----------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b.out", "pop.agendaId", "x y", "ünï"])
PATHS = st.sampled_from([None, "/", "/k", "k/0", "/k?", "/k?d", "?"])
REFERENCES = st.builds(reference_text, NAMES, PATHS)
TEXT = st.text(alphabet=st.characters(exclude_characters="@<>"), max_size=8)
STRINGS = st.lists(
    st.one_of(TEXT, REFERENCES, st.sampled_from(["@<", "<", ">", "@"])), max_size=4
).map("".join)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), STRINGS)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.one_of(TEXT, REFERENCES), children, max_size=4)
    ),
    max_leaves=20,
)
PLAIN_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), TEXT)
CONTEXTS = st.dictionaries(NAMES, st.one_of(PLAIN_SCALARS, st.dictionaries(TEXT, PLAIN_SCALARS)))


@given(JSON_VALUES)
def test_with_an_empty_context_nothing_changes_and_every_reference_is_missing(value: Any) -> None:
    result = resolve(value, {})
    assert result.value == value
    assert result.missing == tuple(dict.fromkeys(r.text for r in find_references(value)))
    assert result.invalid == ()


@given(JSON_VALUES, CONTEXTS)
def test_resolving_never_mutates_its_input_nor_the_context(value: Any, context: Any) -> None:
    value_before, context_before = copy.deepcopy(value), copy.deepcopy(context)
    resolve(value, context)
    assert value == value_before
    assert context == context_before


@given(
    st.recursive(
        PLAIN_SCALARS | st.floats(allow_nan=False),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4),
    ),
    CONTEXTS,
)
def test_a_value_without_references_is_returned_equal(value: Any, context: Any) -> None:
    assert resolve(value, context) == Resolution(value)


@given(JSON_VALUES, st.text(alphabet=st.characters(exclude_characters="@<>"), max_size=5))
def test_when_every_name_is_known_without_paths_no_reference_survives(
    value: Any, replacement: str
) -> None:
    plain = [r for r in find_references(value) if r.path is None]
    context = {r.name: replacement for r in plain}
    result = resolve(value, context)
    assert result.missing == tuple(
        dict.fromkeys(r.text for r in find_references(value) if r.name not in context)
    )
    remaining = {r.text for r in find_references(result.value)}
    assert not remaining & {r.text for r in plain}


@given(st.dictionaries(st.text(max_size=5), st.integers(), min_size=1))
def test_every_key_is_reachable_by_its_escaped_pointer(document: dict[str, int]) -> None:
    for key, value in document.items():
        pointer = "/" + key.replace("~", "~0").replace("/", "~1")
        assert json_pointer(document, pointer) == (True, value)
