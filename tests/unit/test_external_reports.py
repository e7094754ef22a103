"""External executors' reports as decide commands: the pure translation, table-tested.

A report is POP's AgendaProgress as an executor pod sends it (``updateAgendaProgress``);
``translate`` turns it into the commands (and events) it means for the holder's dispatch.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from popflow.engine.decide import (
    Dispatch,
    Reclaim,
    RecordOutcome,
    ReportProgress,
    Start,
    StartOperation,
)
from popflow.engine.external import agenda_document
from popflow.engine.external_reports import (
    AgendaReport,
    Conclude,
    ExternalCommand,
    expansion,
    parse_report,
    requested_operations,
    resume_progress,
    translate,
)
from popflow.engine.runner import Failed, ProgressReport, Succeeded
from popflow.engine.state import evolve
from popflow.errors import InvalidRequest, InvalidTransition
from popflow.events.vocabulary import (
    AgendaFailed,
    AgendaSucceeded,
    DiagnosticEvent,
    Event,
    OperationFailed,
    OperationsGenerated,
    OperationStarted,
    OperationSucceeded,
)
from popflow.projections.progress import ProgressView, fold_all
from tests.support.agendas import Scenario, agenda, op, recorded

NOW = 5_000
HOLDER = "external:puller:1"


def held(*operations: Any) -> Scenario:
    """An agenda handed out to an external executor (dispatch 1), not yet reported on."""
    s = Scenario(agenda(*operations))
    s.do(Dispatch(HOLDER))
    return s


def view_of(s: Scenario) -> ProgressView:
    view = fold_all(recorded(s.events))
    assert view is not None
    return view


def pop_op(name: str, state: str, message: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "operation": name,
        "processingState": state,
        "processingStateMessage": message,
        **fields,
    }


def body(*operations: dict[str, Any], state: str | None = None, **fields: Any) -> dict[str, Any]:
    """An agendaProgress as POP's executor sends it (``p-1`` is the scenario's progress id)."""
    progress: dict[str, Any] = {"id": "p-1", "operationProgress": list(operations), **fields}
    if state is not None:
        progress["processingState"] = state
    return progress


def run(s: Scenario, progress: dict[str, Any]) -> tuple[list[ExternalCommand], list[Event]]:
    translation = translate(s.state, view_of(s), parse_report(progress, NOW), NOW)
    return translation.commands, translation.events


def started(*names: str) -> Scenario:
    """Held, started, and the named operations started (attempt 1)."""
    s = held(op("a"), op("b", dependsOn="a"), op("c"))
    s.do(Start(1))
    for name in names:
        s.do(StartOperation(name, 1))
    return s


def succeeded(name: str) -> RecordOutcome:
    return RecordOutcome(name, 1, 1, Succeeded())


def _done(name: str) -> Scenario:
    s = started(name)
    s.do(succeeded(name))
    return s


FAILED_REPORT = [DiagnosticEvent(message="disk full", time=7)]

COMMAND_CASES: list[tuple[str, Scenario, dict[str, Any], list[ExternalCommand]]] = [
    ("a re-sent agenda EXECUTING is a no-op", started(), body(state="EXECUTING"), []),
    (
        "the first report starts the agenda",
        held(op("a")),
        body(state="EXECUTING", processingStateMessage="Running Operations"),
        [Start(1)],
    ),
    (
        "an operation EXECUTING starts, with its progress",
        started(),
        body(pop_op("a", "EXECUTING", percentComplete=40.0, params={"JobId": "j1"})),
        [
            StartOperation("a", 1),
            ReportProgress("a", 1, 1, ProgressReport(40.0, None, {"JobId": "j1"})),
        ],
    ),
    (
        "an operation EXECUTING with nothing new only starts",
        started(),
        body(pop_op("a", "EXECUTING", percentComplete=0.0)),
        [StartOperation("a", 1)],
    ),
    (
        "a re-sent EXECUTING is a no-op",
        started("a"),
        body(pop_op("a", "EXECUTING", percentComplete=0.0)),
        [],
    ),
    (
        "a new percent and message are reported, unchanged params are not",
        started("a"),
        body(pop_op("a", "EXECUTING", "copying", percentComplete=55.0, params={})),
        [ReportProgress("a", 1, 1, ProgressReport(55.0, "copying", None))],
    ),
    (
        "COMPLETE and succeeded (any case) records the parsed result",
        started(),
        body(pop_op("a", "COMPLETE", "SUCCEEDED", resultPayload='{"x": [1]}', params={"k": 1})),
        [StartOperation("a", 1), RecordOutcome("a", 1, 1, Succeeded({"x": [1]}, {"k": 1}))],
    ),
    (
        "a re-sent COMPLETE is a no-op",
        _done("a"),
        body(pop_op("a", "COMPLETE", "succeeded", resultPayload="{}")),
        [],
    ),
    (
        "COMPLETE with another message is a failure with the handler's diagnostics",
        started("a"),
        body(
            pop_op(
                "a",
                "COMPLETE",
                "Success",
                diagnosticEvents=[{"message": "disk full", "time": 7}],
            )
        ),
        [RecordOutcome("a", 1, 1, Failed(FAILED_REPORT))],
    ),
    (
        "dependencies are recorded first, whatever the report's order",
        started(),
        body(
            pop_op("b", "EXECUTING"),
            pop_op("a", "COMPLETE", "succeeded"),
        ),
        [StartOperation("a", 1), succeeded("a"), StartOperation("b", 1)],
    ),
    (
        "failures are recorded after the starts of the same report",
        started(),
        body(
            pop_op(
                "a", "COMPLETE", "failed", diagnosticEvents=[{"message": "disk full", "time": 7}]
            ),
            pop_op("c", "EXECUTING"),
        ),
        [
            StartOperation("a", 1),
            StartOperation("c", 1),
            RecordOutcome("a", 1, 1, Failed(FAILED_REPORT)),
        ],
    ),
    (
        "an operation is named by its OperationProgress id too",
        started(),
        body({"id": "p-1-a", "processingState": "executing"}),
        [StartOperation("a", 1)],
    ),
    (
        "WAITING operations are left alone",
        started(),
        body(pop_op("a", "WAITING", "pending")),
        [],
    ),
    (
        "agenda COMPLETE concludes it",
        started(),
        body(
            pop_op("a", "COMPLETE", "succeeded"), state="COMPLETE", processingStateMessage="failed"
        ),
        [StartOperation("a", 1), succeeded("a"), Conclude(1, claims_success=False)],
    ),
]


@pytest.mark.parametrize(
    ("scenario", "progress", "expected"),
    [case[1:] for case in COMMAND_CASES],
    ids=[case[0] for case in COMMAND_CASES],
)
def test_reports_become_commands(
    scenario: Scenario, progress: dict[str, Any], expected: list[ExternalCommand]
) -> None:
    commands, _events = run(scenario, progress)
    assert commands == expected


def test_a_failed_operation_is_recorded_with_a_diagnostic_even_without_one() -> None:
    _commands, events = run(started("a"), body(pop_op("a", "COMPLETE", "Success")))
    [failure] = events
    assert isinstance(failure, OperationFailed)
    assert failure.diagnostics[0].message == (
        "Failed to complete operation: a (COMPLETE with message 'Success')"
    )


def test_nothing_starts_after_a_failure() -> None:
    s = started("a")
    s.do(RecordOutcome("a", 1, 1, Failed(FAILED_REPORT)))
    assert run(s, body(pop_op("c", "EXECUTING"), pop_op("c", "COMPLETE", "succeeded"))) == ([], [])


def test_an_outcome_contradicting_the_recorded_one_is_ignored() -> None:
    s = started("a")
    s.do(succeeded("a"))
    assert run(s, body(pop_op("a", "COMPLETE", "failed"))) == ([], [])


def test_an_interrupted_operation_resumes_its_attempt_under_the_new_dispatch() -> None:
    s = started("a")
    s.do(Reclaim(1, "lease lapsed"))
    s.do(Dispatch("external:puller:2"))
    commands, events = run(s, body(pop_op("a", "EXECUTING", percentComplete=10.0)))
    assert commands[:2] == [Start(2), StartOperation("a", 2)]
    assert OperationStarted(operation="a", attempt=1, dispatch=2) in events


def test_success_claimed_over_a_failed_operation_is_recorded_as_failed() -> None:
    s = started("a", "c")
    s.do(succeeded("a"))
    s.do(RecordOutcome("c", 1, 1, Failed(FAILED_REPORT)))
    _commands, events = run(s, body(state="COMPLETE", processingStateMessage="succeeded"))
    [conclusion] = events
    assert isinstance(conclusion, AgendaFailed)
    assert conclusion.failed_operations == ["c"]
    assert conclusion.diagnostics[0].message == "Operation [c] failed: disk full"


def test_operations_still_running_at_the_end_are_recorded_as_abandoned() -> None:
    s = started("a", "c")
    s.do(succeeded("a"))
    report = body(
        pop_op("b", "COMPLETE", "succeeded"),
        state="COMPLETE",
        processingStateMessage="succeeded",
    )
    _commands, events = run(s, report)
    abandoned = next(e for e in events if isinstance(e, OperationFailed))
    assert abandoned.operation == "c"
    assert "still EXECUTING" in abandoned.diagnostics[0].message
    assert isinstance(events[-1], AgendaFailed)
    assert events[-1].failed_operations == ["c"]


def test_success_claimed_with_operations_never_run_fails_the_agenda() -> None:
    s = started("a")
    s.do(succeeded("a"))
    report = body(state="COMPLETE", processingStateMessage="succeeded")
    [conclusion] = run(s, report)[1]
    assert isinstance(conclusion, AgendaFailed)
    assert conclusion.diagnostics[0].message == (
        "The external executor reported the agenda COMPLETE without running the operations: "
        "[b], [c]"
    )


def test_a_failure_reported_with_every_operation_succeeded_is_kept() -> None:
    s = held(op("a"))
    s.do(Start(1))
    report = body(
        pop_op("a", "COMPLETE", "succeeded"),
        state="COMPLETE",
        processingStateMessage="failed",
        diagnosticEvents=[{"message": "executor crashed", "time": 9}],
    )
    events = run(s, report)[1]
    assert isinstance(events[-1], AgendaFailed)
    assert events[-1].diagnostics == [DiagnosticEvent(message="executor crashed", time=9)]


def test_an_agenda_reported_complete_and_succeeded_succeeds() -> None:
    s = held(op("a"))
    report = body(
        pop_op("a", "COMPLETE", "succeeded", resultPayload='"out"'),
        state="COMPLETE",
        processingStateMessage="succeeded",
    )
    events = run(s, report)[1]
    assert OperationSucceeded(operation="a", attempt=1, result="out") in events
    assert events[-1] == AgendaSucceeded(dispatch=1)


GENERATOR = op(
    "expand",
    "updateAgenda",
    {"operations": [{"name": "extra", "type": "sample"}]},
)


def test_operations_a_generator_adds_may_be_reported_in_the_same_report() -> None:
    s = held(GENERATOR)
    report = body(
        pop_op("extra", "EXECUTING"),
        pop_op(
            "expand",
            "COMPLETE",
            "succeeded",
            resultPayload='{"operations": [{"name": "extra", "type": "sample"}]}',
        ),
    )
    commands, events = run(s, report)
    assert commands[-1] == StartOperation("extra", 1)
    assert sum(isinstance(e, OperationsGenerated) for e in events) == 1


def test_a_generator_whose_operations_updateagenda_added_does_not_add_them_again() -> None:
    # POP's updateAgenda handler calls updateAgenda, then succeeds with the same operations.
    s = held(GENERATOR)
    s.do(Start(1))
    s.do(StartOperation("expand", 1))
    extra = {"name": "extra", "type": "sample", "params": {"generatedOperationParent": "expand"}}
    _apply(s, expansion(s.state, requested_operations("a-1", [extra]), None))
    output = {"operations": [extra]}
    report = body(pop_op("expand", "COMPLETE", "succeeded", resultPayload=_json(output)))
    assert run(s, report)[1] == [OperationSucceeded(operation="expand", attempt=1, result=output)]
    assert list(s.state.operations) == ["expand", "extra"]


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _apply(s: Scenario, events: list[Event]) -> None:
    for event in events:
        s.state = evolve(s.state, event)
        s.events.append(event)


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "message"),
    [
        (body(pop_op("nope", "EXECUTING"), pop_op("gone", "COMPLETE", "failed")), "[nope], [gone]"),
        (body(pop_op("a", "COMPLETE", "succeeded", resultPayload="{not json")), "resultPayload"),
        ({**body(), "id": "p-2"}, "is not the progress of agenda a-1"),
        (body(pop_op("a", "RUNNING")), "must be WAITING, EXECUTING or COMPLETE"),
        (body({"processingState": "EXECUTING"}), "names no operation"),
        ({**body(), "percentDone": 3}, "percentDone"),
        ({"processingState": "EXECUTING"}, "agendaProgress.id"),
    ],
)
def test_bad_reports_are_invalid_requests(progress: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        run(started(), progress)


def test_fields_of_pop_progress_objects_that_popflow_derives_are_accepted() -> None:
    echoed = body(
        pop_op("a", "EXECUTING", agendaProgressId="p-1", cid="c", attemptCount=0, startedTime=1),
        state="EXECUTING",
        agendaId="a-1",
        customerId="acme",
        startedTime=1,
        percentComplete=3.0,
        agendaInsight={"insightId": "i"},
    )
    report = parse_report(echoed, NOW)
    assert isinstance(report, AgendaReport)
    assert [o.name for o in report.operations] == ["a"]


def test_an_operation_cannot_start_before_its_dependencies() -> None:
    with pytest.raises(
        InvalidTransition, match=r"\[b\] is reported EXECUTING but cannot start before \[a\]"
    ):
        run(started(), body(pop_op("b", "EXECUTING")))


# --- updateAgenda ------------------------------------------------------------------------------


def test_added_operations_take_their_parent_from_their_params() -> None:
    s = started()
    ops = requested_operations(
        "a-1",
        [
            {"name": "x", "type": "t", "params": {"generatedOperationParent": "a"}},
            {
                "name": "y",
                "type": "t",
                "payload": "@<x.out>",
                "params": {"generatedOperationParent": "a"},
            },
        ],
    )
    [event] = expansion(s.state, ops, {"k": "v"})
    assert isinstance(event, OperationsGenerated)
    assert (event.parent, [o.name for o in event.operations], event.params) == (
        "a",
        ["x", "y"],
        {"k": "v"},
    )
    mixed = requested_operations("a-1", [{"name": "x", "type": "t"}, {"name": "y", "type": "t"}])
    assert expansion(s.state, mixed, None)[0].parent == "updateAgenda"  # type: ignore[attr-defined]


def test_updateagenda_refuses_what_pop_accepted_silently() -> None:
    s = started()
    with pytest.raises(InvalidRequest, match=re.escape("unique (ignoring case): [a], [A]")):
        expansion(s.state, requested_operations("a-1", [{"name": "A", "type": "t"}]), None)
    with pytest.raises(InvalidRequest, match="Invalid references"):
        expansion(
            s.state,
            requested_operations("a-1", [{"name": "x", "type": "t", "payload": "@<zz.out>"}]),
            None,
        )


def test_an_identical_retry_adds_nothing() -> None:
    s = started()
    ops = requested_operations("a-1", [{"name": "x", "type": "t"}])
    _apply(s, expansion(s.state, ops, None))
    assert expansion(s.state, ops, None) == []


@pytest.mark.parametrize(
    ("agenda_id", "operations", "message"),
    [
        ("", [{"name": "x", "type": "t"}], "agendaId is required on an updateAgenda request"),
        ("a-1", [], "One or more operations must be specified on an updateAgenda request"),
        ("a-1", None, "One or more operations must be specified on an updateAgenda request"),
        ("a-1", [{"name": "x", "type": "t", "typo": 1}], "typo"),
    ],
)
def test_updateagenda_requests_are_checked(
    agenda_id: str, operations: list[dict[str, Any]] | None, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        requested_operations(agenda_id, operations)


def test_a_completed_agenda_takes_no_operations() -> None:
    s = held(op("a"))
    _apply(
        s,
        run(
            s,
            body(
                pop_op("a", "COMPLETE", "succeeded"),
                state="COMPLETE",
                processingStateMessage="succeeded",
            ),
        )[1],
    )
    with pytest.raises(InvalidTransition, match="complete"):
        expansion(s.state, requested_operations("a-1", [{"name": "x", "type": "t"}]), None)


# --- what is handed out ----------------------------------------------------------------------


def test_the_handed_out_agenda_is_pop_json_with_added() -> None:
    s = held(op("a", payload={"u": 1}))
    document = agenda_document(s.state, added_ms=123)
    assert document["id"] == "a-1"
    assert document["progressId"] == "p-1"
    assert document["customerId"] == "acme"
    assert document["cid"] == "cid-1"
    assert document["agendaInsight"] == {"resourcePoolId": "default", "insightId": "default"}
    assert document["operations"] == [{"name": "a", "type": "sample", "payload": {"u": 1}}]
    assert document["params"] == {"added": 123}


def test_prior_progress_is_given_only_to_resume() -> None:
    fresh = held(op("a"), op("b"))
    assert resume_progress(fresh.state, view_of(fresh)) is None
    s = held(op("a"), op("b"))
    s.do(Start(1))
    s.do(StartOperation("a", 1))
    s.do(ReportProgress("a", 1, 1, ProgressReport(40.0, None, {"JobId": "j1"})))
    s.do(Reclaim(1, "lease lapsed"))
    s.do(Dispatch("external:puller:2"))
    prior = resume_progress(s.state, view_of(s))
    assert prior is not None
    by_name = {o["operation"]: o for o in prior["operationProgress"]}
    # Interrupted: shown as last reported, so that a POP executor passes it as LAST_PROGRESS.
    assert by_name["a"]["processingState"] == "EXECUTING"
    assert by_name["a"]["params"] == {"JobId": "j1"}
    assert by_name["a"]["percentComplete"] == 40.0
    assert by_name["b"]["processingState"] == "WAITING"
