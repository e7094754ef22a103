"""Strict decoding of submitted agendas, dependsOn, and POP's tolerant parameter getters."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from popflow.engine.agenda import (
    agenda_from_mapping,
    depends_on,
    param_bool,
    param_int,
    param_str,
    parse_agenda,
)
from popflow.errors import InvalidAgenda
from popflow.events.vocabulary import Agenda, Operation

LIMIT = 1 << 20

SUBMISSION: dict[str, Any] = {
    "customerId": "acme",
    "cid": "c-1",
    "linkId": "link",
    "jobId": "job",
    "title": "Encode",
    "params": {"maximumAttempts": 2},
    "operations": [
        {"name": "probe", "type": "mediainfo", "payload": {"url": "s3://in/a.mp4"}, "id": "o1"},
        {
            "name": "encode",
            "type": "ffmpeg",
            "payload": {"width": "@<probe.out::/width>"},
            "params": {"dependsOn": "probe"},
        },
    ],
}

EXPECTED = Agenda(
    customer_id="acme",
    cid="c-1",
    link_id="link",
    job_id="job",
    title="Encode",
    params={"maximumAttempts": 2},
    operations=[
        Operation(name="probe", type="mediainfo", payload={"url": "s3://in/a.mp4"}, id="o1"),
        Operation(
            name="encode",
            type="ffmpeg",
            payload={"width": "@<probe.out::/width>"},
            params={"dependsOn": "probe"},
        ),
    ],
)

Parse = Callable[[Any], Agenda]


def from_bytes(document: Any) -> Agenda:
    return parse_agenda(json.dumps(document).encode(), max_bytes=LIMIT)


def from_text(document: Any) -> Agenda:
    return parse_agenda(json.dumps(document), max_bytes=LIMIT)


def from_mapping(document: Any) -> Agenda:
    return agenda_from_mapping(document, max_bytes=LIMIT)


# Every rule holds for bytes, text and already-decoded data alike.
parsers = pytest.mark.parametrize("parse", [from_bytes, from_text, from_mapping])


def problems_of(parse: Parse, document: Any) -> tuple[str, ...]:
    with pytest.raises(InvalidAgenda) as caught:
        parse(document)
    return caught.value.problems


@parsers
def test_a_submission_decodes_into_the_vocabulary_agenda(parse: Parse) -> None:
    assert parse(SUBMISSION) == EXPECTED


@parsers
def test_server_assigned_fields_are_accepted_and_ignored(parse: Parse) -> None:
    echoed = {
        **SUBMISSION,
        "id": "a-1",
        "progressId": "p-1",
        "agendaInsight": {"resourcePoolId": "rp", "insightId": "i"},
        "addedTime": 1700000000000,
        "updatedTime": 1700000000001,
    }
    assert parse(echoed) == EXPECTED


def test_every_field_of_the_vocabulary_agenda_round_trips() -> None:
    # Fails when a field is added to Agenda or Operation but not to the input mirror.
    assert parse_agenda(msgspec.json.encode(EXPECTED), max_bytes=LIMIT) == EXPECTED


@parsers
@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({**SUBMISSION, "customerid": "x"}, "Object contains unknown field `customerid`"),
        (
            {**SUBMISSION, "operations": [{"name": "a", "type": "t", "dependson": "b"}]},
            "Object contains unknown field `dependson` - at `$.operations[0]`",
        ),
        (
            {**SUBMISSION, "operations": [{"name": 1, "type": "t"}]},
            "Expected `str | null`, got `int` - at `$.operations[0].name`",
        ),
        (
            {**SUBMISSION, "operations": {"name": "a"}},
            "Expected `array | null`, got `object` - at `$.operations`",
        ),
        (
            {**SUBMISSION, "params": []},
            "Expected `object | null`, got `array` - at `$.params`",
        ),
        (
            {**SUBMISSION, "operations": [{"name": "a", "type": "t", "params": "x"}]},
            "Expected `object | null`, got `str` - at `$.operations[0].params`",
        ),
        (
            {**SUBMISSION, "operations": [None]},
            "Expected `object`, got `null` - at `$.operations[0]`",
        ),
        ({**SUBMISSION, "cid": 5}, "Expected `str | null`, got `int` - at `$.cid`"),
    ],
)
def test_unknown_fields_and_wrong_types_are_rejected_with_their_path(
    parse: Parse, document: Any, problem: str
) -> None:
    assert problems_of(parse, document) == (problem,)


@parsers
@pytest.mark.parametrize(
    ("document", "kind"),
    [
        ([SUBMISSION], "an array"),
        ("agenda", "a string"),
        (3, "a number"),
        (True, "a boolean"),
        (None, "null"),
    ],
)
def test_an_agenda_must_be_a_json_object(parse: Parse, document: Any, kind: str) -> None:
    assert problems_of(parse, document) == (f"An agenda must be a JSON object, got {kind}.",)


@parsers
def test_blank_and_absent_fields_decode_as_blanks_for_validation_to_report(parse: Parse) -> None:
    document = {"customerId": None, "operations": [{"name": None}, {"type": "t"}]}
    assert parse(document) == Agenda(
        customer_id="", operations=[Operation(name="", type=""), Operation(name="", type="t")]
    )
    assert parse({}) == Agenda(customer_id="", operations=[])
    assert parse({"operations": None, "params": None}).params == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b'{"customerId": "a",\n  "operations": x}', "Expecting value (line 2, column 17)"),
        (b'{"customerId": "a"} trailing', "Extra data (line 1, column 21)"),
        (
            b'{"customerId": "\xc3\xa9", x}',
            "property name enclosed in double quotes (line 1, column 21)",
        ),
        (
            b'{"customerId": "a",\n',
            "Expecting property name enclosed in double quotes (line 2, column 1)",
        ),
        (b'{"customerId": "a', "Unterminated string starting at (line 1, column 16)"),
        (b"[1 2]", "Expecting ',' delimiter (line 1, column 4)"),
        (b"NaN", "JSON is malformed: invalid character (byte 0)"),  # json.loads would accept it
        (b"\xff", "JSON is malformed: invalid character (byte 0)"),
    ],
)
def test_invalid_json_is_rejected_with_line_and_column(text: bytes, problem: str) -> None:
    with pytest.raises(InvalidAgenda) as caught:
        parse_agenda(text, max_bytes=LIMIT)
    [message] = caught.value.problems
    assert message.startswith("The agenda is not valid JSON: ")
    assert message.endswith(f"{problem}.")


@pytest.mark.parametrize("text", [b"", b"  \n ", ""])
def test_empty_input_is_rejected(text: bytes | str) -> None:
    with pytest.raises(InvalidAgenda, match="The agenda is empty"):
        parse_agenda(text, max_bytes=LIMIT)


def test_a_deeply_nested_agenda_is_rejected() -> None:
    text = '{"customerId": "a", "operations": [{"name": "a", "type": "t", "payload": '
    text += "[" * 5000 + "]" * 5000 + "}]}"
    with pytest.raises(InvalidAgenda, match="nested too deeply"):
        parse_agenda(text, max_bytes=LIMIT)


@pytest.mark.parametrize(
    ("size", "limit", "problem"),
    [
        (1001, 1000, "The agenda is 1001 bytes, over the limit of 1000 bytes."),
        (3 * 1024, 2 * 1024, "The agenda is 3 KiB, over the limit of 2 KiB."),
        (1025, 1024, "The agenda is 1.1 KiB, over the limit of 1 KiB."),
        ((1 << 20) + 1, 1 << 20, "The agenda is 1.1 MiB, over the limit of 1 MiB."),
        (5 << 20, 1536 << 10, "The agenda is 5 MiB, over the limit of 1.5 MiB."),
        (2 << 20, 1000 << 10, "The agenda is 2 MiB, over the limit of 1000 KiB."),
    ],
)
def test_oversized_input_is_rejected_before_parsing(size: int, limit: int, problem: str) -> None:
    with pytest.raises(InvalidAgenda) as caught:
        parse_agenda(b"x" * size, max_bytes=limit)  # not JSON: the size is checked first
    assert caught.value.problems == (problem,)


def test_the_size_of_text_is_counted_in_utf8_bytes() -> None:
    text = json.dumps({"customerId": "é" * 600}, ensure_ascii=False)
    assert len(text) < 1024 < len(text.encode())
    with pytest.raises(InvalidAgenda, match="over the limit"):
        parse_agenda(text, max_bytes=1024)


def test_the_size_of_a_mapping_is_the_size_of_its_json() -> None:
    document = {"customerId": "x" * 2000, "operations": []}
    assert agenda_from_mapping(document, max_bytes=4096).customer_id == "x" * 2000
    with pytest.raises(InvalidAgenda, match="over the limit of 1 KiB"):
        agenda_from_mapping(document, max_bytes=1024)


def test_a_mapping_that_is_not_json_data_is_rejected() -> None:
    with pytest.raises(InvalidAgenda, match="not JSON data"):
        agenda_from_mapping({"customerId": object()}, max_bytes=LIMIT)


# --- dependsOn ------------------------------------------------------------------------------


def op(params: dict[str, Any]) -> Operation:
    return Operation(name="x", type="t", params=params)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        ("a", ("a",)),
        ("a,b,c", ("a", "b", "c")),
        (" a , ,b ,, ", ("a", "b")),
        ("a,a,b", ("a", "b")),
        (["a", " b ", ""], ("a", "b")),
        ([], ()),
    ],
)
def test_depends_on(value: Any, expected: tuple[str, ...]) -> None:
    params = {} if value is None else {"dependsOn": value}
    assert depends_on(op(params)) == expected


@pytest.mark.parametrize("value", [5, ["a", 1], {"a": 1}, True])
def test_a_malformed_depends_on_is_an_error(value: Any) -> None:
    with pytest.raises(ValueError, match=r"params\.dependsOn must be"):
        depends_on(op({"dependsOn": value}))


# --- ParamsMap getters (pop-spec §1.10, §9.2 case 73) ---------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"k": 45}, 45),
        ({"k": "45"}, 45),
        ({"k": " 45 "}, 45),
        ({"k": "-3"}, -3),
        ({"k": 45.0}, 45),
        ({"k": None}, 55),
        ({}, 55),
    ],
)
def test_param_int(params: dict[str, Any], expected: int) -> None:
    assert param_int(params, "k", 55) == expected  # the default is used only when unset


@pytest.mark.parametrize("value", ["abc", "4.5", 4.5, True, [1], "", "4_5"])
def test_param_int_rejects_what_is_not_an_integer(value: Any) -> None:
    with pytest.raises(ValueError, match=r"params\.k must be an integer"):
        param_int({"k": value}, "k", 0)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"k": True}, True),
        ({"k": False}, False),
        ({"k": "true"}, True),
        ({"k": "TRUE"}, True),
        ({"k": "false"}, False),
        ({"k": None}, None),
        ({}, None),
    ],
)
def test_param_bool(params: dict[str, Any], expected: bool | None) -> None:
    assert param_bool(params, "k", default=None) == expected


@pytest.mark.parametrize("value", ["yes", 1, 0, "", [True]])
def test_param_bool_rejects_what_is_not_a_boolean(value: Any) -> None:
    with pytest.raises(ValueError, match=r"params\.k must be a boolean"):
        param_bool({"k": value}, "k", default=False)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"k": "text"}, "text"),
        ({"k": 45}, "45"),
        ({"k": True}, "true"),
        ({"k": {"a": [1]}}, '{"a":[1]}'),
        ({"k": None}, "d"),
        ({}, "d"),
    ],
)
def test_param_str(params: dict[str, Any], expected: str) -> None:
    assert param_str(params, "k", "d") == expected
