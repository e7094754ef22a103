"""Agenda validation (pop-spec §2.4, §9.2 cases 13-16) and the dependency graph behind it."""

from __future__ import annotations

from typing import Any

import pytest

from popflow.engine.agenda import parse_agenda
from popflow.engine.dag import dependencies, find_cycles, referenced_operations
from popflow.engine.validation import check_agenda, validate_agenda, validate_generated
from popflow.errors import InvalidAgenda
from popflow.events.vocabulary import Agenda, Operation

CYCLE = "There is a circular reference involving the operations: "


def op(name: str, payload: Any = None, *, type: str = "t", **params: Any) -> Operation:  # noqa: A002 - POP's field name
    return Operation(name=name, type=type, payload=payload, params=params)


def refs(*names: str) -> dict[str, str]:
    """A payload referencing the output of each named operation."""
    return {f"in{i}": f"@<{name}.out>" for i, name in enumerate(names)}


def agenda(*operations: Operation, customer: str = "acme", **params: Any) -> Agenda:
    return Agenda(customer_id=customer, operations=list(operations), params=params)


def problems(*operations: Operation, **params: Any) -> list[str]:
    return validate_agenda(agenda(*operations, **params))


# --- a valid agenda -------------------------------------------------------------------------


def test_a_valid_agenda_has_no_problems() -> None:
    valid = agenda(
        op("probe", {"url": "s3://in/a.mp4", "agenda": "@<pop.agendaId>"}),
        op("encode", {"width": "@<probe.out::/width?720>", "me": "@<pop.operationName>"}),
        op("package", refs("encode"), dependsOn="probe"),
        op("x.output", "@<encode.out>"),
        op("notify", ["@<x.output.out>", "done: @<package.out::/url>"]),
        maximumAttempts=5,
    )
    assert validate_agenda(valid) == []
    check_agenda(valid)  # does not raise


def test_check_agenda_raises_with_every_problem() -> None:
    with pytest.raises(InvalidAgenda) as caught:
        check_agenda(agenda(customer=""))
    assert caught.value.problems == (
        "The customerId field must be specified.",
        "No operations specified in Agenda.",
    )


# --- agenda-level rules (§9.2 case 13) ------------------------------------------------------


@pytest.mark.parametrize("customer", ["", "   "])
def test_a_customer_is_required(customer: str) -> None:
    assert validate_agenda(agenda(op("a"), customer=customer)) == [
        "The customerId field must be specified."
    ]


@pytest.mark.parametrize("operations", ["null", "[]"])
def test_case_13_an_agenda_needs_operations(operations: str) -> None:
    submitted = parse_agenda(f'{{"customerId": "c", "operations": {operations}}}', max_bytes=999)
    assert validate_agenda(submitted) == ["No operations specified in Agenda."]


def test_the_number_of_operations_is_bounded() -> None:
    many = agenda(*(op(f"op{i}") for i in range(4)))
    assert validate_agenda(many, max_operations=4) == []
    assert validate_agenda(many, max_operations=3) == [
        "An agenda may have at most 3 operations, got 4."
    ]


@pytest.mark.parametrize("attempts", [1, 20, "3", " 7 ", 4.0, None])
def test_maximum_attempts_within_range(attempts: Any) -> None:
    assert problems(op("a"), maximumAttempts=attempts) == []


@pytest.mark.parametrize(
    ("attempts", "problem"),
    [
        (0, "Agenda params.maximumAttempts must be from 1 to 20, got 0."),
        (21, "Agenda params.maximumAttempts must be from 1 to 20, got 21."),
        ("-1", "Agenda params.maximumAttempts must be from 1 to 20, got -1."),
        ("abc", 'Agenda params.maximumAttempts must be an integer, got "abc".'),
        (2.5, "Agenda params.maximumAttempts must be an integer, got 2.5."),
        (True, "Agenda params.maximumAttempts must be an integer, got true."),
    ],
)
def test_maximum_attempts_out_of_range_or_not_an_integer(attempts: Any, problem: str) -> None:
    assert problems(op("a"), maximumAttempts=attempts) == [problem]


# --- names (§9.2 case 14) -------------------------------------------------------------------


def test_case_14_names_must_be_unique_ignoring_case() -> None:
    assert problems(op("foo"), op("FOo")) == [
        "Operation names must be unique (ignoring case): [foo], [FOo]."
    ]


def test_every_clash_is_reported_once_with_all_its_names() -> None:
    assert problems(op("a"), op("b"), op("A"), op("B"), op("a")) == [
        "Operation names must be unique (ignoring case): [a], [A], [a].",
        "Operation names must be unique (ignoring case): [b], [B].",
    ]


@pytest.mark.parametrize("name", ["", "  "])
def test_case_14_operations_must_have_names(name: str) -> None:
    assert problems(op("a"), op(name)) == ["Operations must have names: operations[1] has none."]


def test_an_unnamed_operation_is_designated_by_its_index() -> None:
    assert problems(op("", type="")) == [
        "Operations must have names: operations[0] has none.",
        "Operation operations[0] must have a type.",
    ]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (" a", "Operation name [ a] must not start or end with whitespace."),
        ("a\t", "Operation name [a\t] must not start or end with whitespace."),
        (
            "pop.agendaId",
            "Operation name [pop.agendaId] must not start with [pop.]: "
            "the prefix is reserved for the engine's tokens.",
        ),
        (
            "a<b",
            "Operation name [a<b] must not contain '<': references to its output would break.",
        ),
        ("a>b", "Operation name [a>b] must not contain '>': references to its output would break."),
        (
            "a::b",
            "Operation name [a::b] must not contain '::': references to its output would break.",
        ),
        (
            "a\nb",
            "Operation name [a\nb] must not contain '\\n': references to its output would break.",
        ),
    ],
)
def test_names_must_not_break_references(name: str, problem: str) -> None:
    assert problems(op(name)) == [problem]


@pytest.mark.parametrize("name", ["Pop.x", "a:b", "a.out", "x.output", "a b", "é", "a?b", "@a"])
def test_names_that_keep_references_working_are_accepted(name: str) -> None:
    assert problems(op(name), op("user", refs(name))) == []


# --- types ----------------------------------------------------------------------------------


def test_every_operation_needs_a_type() -> None:
    assert problems(op("a", type=""), op("b", type=" ")) == [
        "Operation [a] must have a type.",
        "Operation [b] must have a type.",
    ]


def test_types_are_checked_against_the_known_types_which_are_listed() -> None:
    known = frozenset({"ffmpeg", "mediainfo"}).__contains__
    ops = agenda(op("a", type="ffmpeg"), op("b", type="ffmpg"))
    assert validate_agenda(ops, known_type=known) == [
        "Operation [b] has unknown type [ffmpg]; known types: ffmpeg, mediainfo."
    ]


def test_a_plain_callable_checks_types_without_listing_them() -> None:
    ops = agenda(op("a", type="ffmpeg"), op("b", type="x"))
    assert validate_agenda(ops, known_type=lambda t: t.startswith("ff")) == [
        "Operation [b] has unknown type [x]."
    ]


def test_a_long_list_of_known_types_is_shortened() -> None:
    known = {f"t{i:02}" for i in range(25)}.__contains__
    [problem] = validate_agenda(agenda(op("a", type="nope")), known_type=known)
    assert problem.endswith("t18, t19, ….")


# --- references (§9.2 case 15) --------------------------------------------------------------


def test_case_15_a_reference_to_a_missing_operation_is_invalid() -> None:
    assert problems(op("Op1", "@<Op2.out::/>")) == [
        "Invalid references found in operation [Op1] payload: @<Op2.out::/>"
    ]


def test_case_15_a_reference_to_an_existing_operation_is_valid() -> None:
    assert problems(op("Op1", "@<Op2.out::/>"), op("Op2")) == []


@pytest.mark.parametrize("token", ["pop.agendaId", "pop.operationName", "pop.payload"])
def test_case_15_a_token_reference_is_valid(token: str) -> None:
    assert problems(op("Op1", {"path": f"/mnt/@<{token}>/x"})) == []


@pytest.mark.parametrize(
    ("payload", "listed"),
    [
        ("@<op2.out>", "@<op2.out> (did you mean @<Op2.out>?)"),
        ("@<OP2.OUT::/a?b>", "@<OP2.OUT::/a?b> (did you mean @<Op2.out::/a?b>?)"),
        ("@<Op2>", "@<Op2> (did you mean @<Op2.out>?)"),
        ("@<Op2.output>", "@<Op2.output>"),
        ("@<sourceFile>", "@<sourceFile>"),
    ],
)
def test_references_are_case_sensitive_and_near_misses_are_pointed_out(
    payload: str, listed: str
) -> None:
    assert problems(op("Op1", {"x": [payload]}), op("Op2")) == [
        f"Invalid references found in operation [Op1] payload: {listed}"
    ]


def test_all_bad_references_of_an_operation_are_listed_once_in_one_problem() -> None:
    payload = {"a": "@<x.out>", "b": ["@<y.out> and @<x.out>"], "c": "@<good.out>"}
    assert problems(op("Op1", payload), op("good")) == [
        "Invalid references found in operation [Op1] payload: @<x.out>, @<y.out>"
    ]


def test_only_a_trailing_out_designates_an_operation() -> None:
    # pop-spec §10 item 25: "x.output" is an operation name, not "x" + ".out" + "put".
    assert problems(op("x"), op("user", "@<x.output>")) == [
        "Invalid references found in operation [user] payload: @<x.output>"
    ]


def test_invalid_pointers_are_not_checked_the_output_schema_is_unknown() -> None:
    assert problems(op("a"), op("b", "@<a.out::/any/thing>")) == []


# --- dependsOn ------------------------------------------------------------------------------


def test_depends_on_must_name_existing_operations() -> None:
    assert problems(op("a"), op("b", dependsOn="a, c,A2")) == [
        "Operation [b] depends on unknown operation [c].",
        "Operation [b] depends on unknown operation [A2].",
    ]


def test_a_depends_on_that_differs_only_in_case_is_pointed_out() -> None:
    assert problems(op("Probe"), op("b", dependsOn=["probe"])) == [
        "Operation [b] depends on unknown operation [probe] (did you mean [Probe]?)."
    ]


def test_an_operation_may_not_depend_on_itself() -> None:
    assert problems(op("a", dependsOn="a")) == ["Operation [a] may not depend on itself."]


def test_a_malformed_depends_on_is_reported() -> None:
    assert problems(op("a", dependsOn=3)) == [
        "Operation [a]: params.dependsOn must be a comma-separated string or a list of "
        "strings, got 3."
    ]


# --- cycles (§9.2 case 16) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operations", "cycle"),
    [
        ([op("Op1", "@<Op1.out>")], "Op1 -> Op1"),
        (
            [op("1", refs("2")), op("2", refs("3")), op("3", refs("4")), op("4", refs("1"))],
            "1 -> 2 -> 3 -> 4 -> 1",
        ),
        (
            [
                op("1", refs("2", "3", "4")),
                op("2", refs("3")),
                op("3", refs("4")),
                op("4", refs("2")),
            ],
            "2 -> 3 -> 4 -> 2",
        ),
    ],
)
def test_case_16_circular_references(operations: list[Operation], cycle: str) -> None:
    assert problems(*operations) == [CYCLE + cycle]


def test_cycles_through_depends_on_are_found_too() -> None:
    # The original only followed references; an agenda like this one deadlocked at run time.
    assert problems(op("a", dependsOn="b"), op("b", refs("c")), op("c", dependsOn="a")) == [
        CYCLE + "a -> b -> c -> a"
    ]


def test_each_cycle_is_reported_once_and_every_looping_operation_is_named() -> None:
    ops = [
        op("a", refs("b")),
        op("b", refs("a", "c")),
        op("c", refs("b")),
        op("d", dependsOn="a"),  # waits on the loop, but is not in it
        op("x", refs("y")),
        op("y", refs("x")),
    ]
    assert problems(*ops) == [CYCLE + "a -> b -> a", CYCLE + "c -> b -> c", CYCLE + "x -> y -> x"]


def test_a_self_dependency_is_reported_as_such_not_also_as_a_cycle() -> None:
    assert problems(op("a", dependsOn="a")) == ["Operation [a] may not depend on itself."]


def test_all_problems_are_reported_together() -> None:
    submitted = agenda(
        op("a", "@<missing.out>", dependsOn="nope"),
        op("A"),
        op(""),
        op("b", refs("c"), type=""),
        op("c", refs("b")),
        customer="",
        maximumAttempts=99,
    )
    assert validate_agenda(submitted) == [
        "The customerId field must be specified.",
        "Agenda params.maximumAttempts must be from 1 to 20, got 99.",
        "Operations must have names: operations[2] has none.",
        "Operation names must be unique (ignoring case): [a], [A].",
        "Invalid references found in operation [a] payload: @<missing.out>",
        "Operation [a] depends on unknown operation [nope].",
        "Operation [b] must have a type.",
        CYCLE + "b -> c -> b",
    ]


# --- generator parameters (pop-spec §4.6) ---------------------------------------------------

GENERATOR = "agenda.operation.generator"


@pytest.mark.parametrize(
    "spec",
    [
        {"operationsJsonPointer": "/operations"},
        {"operationsJsonPointer": "/ops", "paramsJsonPointer": "/params", "logOnly": True},
        {"operationsJsonPointer": "", "paramsJsonPointer": None, "logOnly": False},
        {"operationsJsonPointer": "/a~1b/0"},
    ],
)
def test_valid_generator_params(spec: dict[str, Any]) -> None:
    assert problems(Operation(name="gen", type="t", params={GENERATOR: spec})) == []


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        (None, "Expected `object`, got `null`"),
        ("/operations", "Expected `object`, got `str`"),
        ({}, "Object missing required field `operationsJsonPointer`"),
        ({"operationsJsonPointer": 3}, "Expected `str`, got `int` - at `$.operationsJsonPointer`"),
        (
            {"operationsJsonPointer": "/o", "paramsJsonPointer": []},
            "Expected `str | null`, got `array` - at `$.paramsJsonPointer`",
        ),
        (
            {"operationsJsonPointer": "/o", "logOnly": "true"},
            "Expected `bool`, got `str` - at `$.logOnly`",
        ),
        (
            {"operationsJsonPointer": "/o", "logonly": True},
            "Object contains unknown field `logonly`",
        ),
        (
            {"operationsJsonPointer": "operations"},
            "a JSON pointer must be empty or start with '/', got 'operations'",
        ),
        (
            {"operationsJsonPointer": "/o", "paramsJsonPointer": "/p~"},
            "a '~' must be followed by 0 or 1 in a JSON pointer, got '/p~'",
        ),
    ],
)
def test_invalid_generator_params(spec: Any, detail: str) -> None:
    assert problems(Operation(name="gen", type="t", params={GENERATOR: spec})) == [
        f"Operation [gen] has invalid params.{GENERATOR}: {detail}."
    ]


# --- generated operations -------------------------------------------------------------------

EXISTING = [op("probe"), op("gen", refs("probe"))]


def test_generated_operations_may_use_existing_and_new_outputs() -> None:
    new = [
        op("encode.1", {"src": "@<probe.out::/url>", "dir": "@<pop.agendaId>"}),
        op("encode.2", refs("gen"), dependsOn="encode.1"),
    ]
    assert validate_generated(EXISTING, new) == []


def test_generating_nothing_is_valid() -> None:
    assert validate_generated(EXISTING, []) == []


def test_generated_names_must_be_unique_against_existing_ones() -> None:
    assert validate_generated(EXISTING, [op("Probe"), op("x"), op("x")]) == [
        "Operation names must be unique (ignoring case): [probe], [Probe].",
        "Operation names must be unique (ignoring case): [x], [x].",
    ]


def test_generated_operations_obey_the_per_operation_rules() -> None:
    new = [op("", type=""), op("pop.x"), op("b", "@<nope.out>", dependsOn="b,zz")]
    assert validate_generated(EXISTING, new, known_type={"t"}.__contains__) == [
        "Operations must have names: generated[0] has none.",
        "Operation name [pop.x] must not start with [pop.]: "
        "the prefix is reserved for the engine's tokens.",
        "Operation generated[0] must have a type.",
        "Invalid references found in operation [b] payload: @<nope.out>",
        "Operation [b] may not depend on itself.",
        "Operation [b] depends on unknown operation [zz].",
    ]


def test_generated_operations_may_not_form_cycles() -> None:
    new = [op("x", refs("y", "probe")), op("y", dependsOn="x")]
    assert validate_generated(EXISTING, new) == [CYCLE + "x -> y -> x"]


def test_generated_operations_count_towards_the_maximum() -> None:
    assert validate_generated(EXISTING, [op("x")], max_operations=2) == [
        "An agenda may have at most 2 operations: 2 exist and 1 were generated."
    ]


# --- the dependency graph -------------------------------------------------------------------


def test_dependencies_are_depends_on_and_referenced_outputs() -> None:
    names = {"a", "b", "c", "x.output"}
    operation = op(
        "d",
        {"1": "@<a.out::/x>", "2": ["@<x.output.out>", "@<pop.agendaId>", "@<zz.out>", "@<b>"]},
        dependsOn="c, unknown",
    )
    assert referenced_operations(operation, names) == {"a", "x.output"}
    assert dependencies(operation, names) == {"a", "x.output", "c", "unknown"}


def test_an_operation_without_references_or_depends_on_has_no_dependencies() -> None:
    assert dependencies(op("a", {"k": "plain"}), {"a"}) == frozenset()


@pytest.mark.parametrize(
    ("graph", "cycles"),
    [
        ({}, []),
        ({"a": [], "b": ["a"]}, []),
        ({"a": ["a"]}, [["a", "a"]]),
        ({"a": ["b"], "b": ["a"]}, [["a", "b", "a"]]),
        ({"a": ["zz"], "zz2": ["a"]}, []),  # edges to unknown nodes are ignored
        ({"a": ["b", "c"], "b": ["c"], "c": ["a"]}, [["a", "c", "a"], ["b", "c", "a", "b"]]),
        ({"1": ["2", "3", "4"], "2": ["3"], "3": ["4"], "4": ["2"]}, [["2", "3", "4", "2"]]),
        ({"a": ["b"], "b": ["a", "c"], "c": ["b"]}, [["a", "b", "a"], ["c", "b", "c"]]),
        ({"p": ["q"], "q": ["p"], "r": ["r"]}, [["p", "q", "p"], ["r", "r"]]),
    ],
)
def test_find_cycles(graph: dict[str, list[str]], cycles: list[list[str]]) -> None:
    assert find_cycles(graph) == cycles


def test_find_cycles_reports_the_shortest_cycle_through_each_start() -> None:
    graph = {"a": ["b", "c"], "b": ["c"], "c": ["d"], "d": ["a"]}
    assert find_cycles(graph) == [["a", "c", "d", "a"], ["b", "c", "d", "a", "b"]]


def test_find_cycles_is_deterministic_whatever_the_edge_order() -> None:
    forward = {"a": ["b", "c"], "b": ["a"], "c": ["a"]}
    backward = {"a": ["c", "b"], "b": ["a"], "c": ["a"]}
    assert find_cycles(forward) == find_cycles(backward) == [["a", "b", "a"], ["c", "a", "c"]]


def test_find_cycles_stops_at_the_limit() -> None:
    star = {"hub": [f"s{i}" for i in range(50)], **{f"s{i}": ["hub"] for i in range(50)}}
    assert len(find_cycles(star)) == 50
    assert len(find_cycles(star, limit=3)) == 3


def test_long_chains_and_rings_do_not_exhaust_the_stack() -> None:
    size = 10_000
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(size)}
    assert find_cycles(chain) == []
    ring = {**chain, f"n{size}": ["n0"]}
    [cycle] = find_cycles(ring)
    assert len(cycle) == size + 2
    assert cycle[0] == cycle[-1] == "n0"


def test_a_large_valid_agenda_validates() -> None:
    ops = [op("n0")] + [op(f"n{i}", refs(f"n{i - 1}")) for i in range(1, 10_000)]
    assert validate_agenda(agenda(*ops)) == []


# --- params.priority (scheduling: Priority insights) -----------------------------------------


@pytest.mark.parametrize("priority", [-10, 0, 7, 10])
def test_a_priority_from_minus_10_to_10_is_valid(priority: int) -> None:
    assert problems(op("a"), priority=priority) == []


@pytest.mark.parametrize("priority", [11, -11, 2.5, 5.0, "5", True, None, [1]])
def test_any_other_priority_is_refused_with_the_range(priority: object) -> None:
    [problem] = problems(op("a"), priority=priority)
    assert problem.startswith("Agenda params.priority must be a whole number from -10")
    assert repr(priority) in problem
