"""decide/evolve as table tests: the agenda's state machine and its guarantees."""

from __future__ import annotations

import pytest

from popflow.engine.decide import (
    Command,
    Dispatch,
    Finish,
    Reclaim,
    RecordOutcome,
    ReportProgress,
    Start,
    StartOperation,
    can_start,
    decide,
    startable,
    submitted,
)
from popflow.engine.router import DEFAULT_INSIGHT
from popflow.engine.runner import Failed, ProgressReport, Succeeded
from popflow.engine.state import AgendaStatus, OperationStatus, evolve, replay
from popflow.errors import InvalidTransition
from popflow.events.vocabulary import (
    AgendaDispatched,
    AgendaFailed,
    AgendaReclaimed,
    AgendaSucceeded,
    DiagnosticEvent,
    Operation,
    OperationFailed,
    OperationOutcomeIgnored,
    OperationProgressed,
    OperationsGenerated,
    OperationStarted,
    OperationSucceeded,
)
from tests.support.agendas import Scenario, agenda, first_event, op


def running(*operations: object, **params: object) -> Scenario:
    s = Scenario(agenda(*operations, **params))  # type: ignore[arg-type]
    s.do(Dispatch("w1"))
    s.do(Start(1))
    return s


def boom(message: str = "boom") -> Failed:
    return Failed([DiagnosticEvent(message=message, time=1)])


# --- submission -------------------------------------------------------------------------------


def test_submission_defaults_and_params() -> None:
    event = submitted(
        agenda(op("a"), maximumAttempts="5"),
        agenda_id="x",
        progress_id="p",
        insight=DEFAULT_INSIGHT,
    )
    assert (event.maximum_attempts, event.held) == (5, False)
    assert (
        submitted(
            agenda(op("a")), agenda_id="x", progress_id="p", insight=DEFAULT_INSIGHT
        ).maximum_attempts
        == 3
    )
    assert (
        submitted(
            agenda(op("a"), maximumAttempts=99),
            agenda_id="x",
            progress_id="p",
            insight=DEFAULT_INSIGHT,
        ).maximum_attempts
        == 20
    )


def test_do_not_run_holds_the_agenda_even_with_a_null_value() -> None:
    state = evolve(None, first_event(agenda(op("a"), doNotRun=None)))
    assert state.status is AgendaStatus.HELD
    with pytest.raises(InvalidTransition):
        decide(state, Dispatch("w1"), 0)


def test_a_history_must_start_with_a_submission() -> None:
    with pytest.raises(InvalidTransition):
        evolve(None, AgendaDispatched(worker_id="w", dispatch=1))


# --- the lifecycle ------------------------------------------------------------------------------


def test_dispatch_start_run_succeed() -> None:
    s = running(op("a"), op("b", payload="@<a.out>"))
    assert s.state.status is AgendaStatus.RUNNING
    assert startable(s.state) == ["a"]
    assert s.do(StartOperation("a", 1)) == [OperationStarted(operation="a", attempt=1, dispatch=1)]
    assert startable(s.state) == []
    s.do(RecordOutcome("a", 1, 1, Succeeded({"x": 1})))
    assert s.state.operation("a").result == {"x": 1}
    assert startable(s.state) == ["b"]
    s.do(StartOperation("b", 1))
    s.do(RecordOutcome("b", 1, 1, Succeeded(None)))
    assert s.do(Finish(1)) == [AgendaSucceeded(dispatch=1)]
    final: AgendaStatus = s.state.status
    assert final is AgendaStatus.SUCCEEDED


def test_only_a_ready_agenda_can_be_dispatched() -> None:
    s = running(op("a"))
    with pytest.raises(InvalidTransition, match="cannot be dispatched"):
        s.do(Dispatch("w2"))


def test_dispatches_are_numbered() -> None:
    s = running(op("a"))
    s.do(Reclaim(1, "test"))
    assert s.do(Dispatch("w2")) == [AgendaDispatched(worker_id="w2", dispatch=2)]


@pytest.mark.parametrize(
    "command",
    [Start(2), StartOperation("a", 2), Finish(2)],
    ids=["start", "start-operation", "finish"],
)
def test_commands_from_a_stale_dispatch_are_refused(command: object) -> None:
    s = running(op("a"))
    with pytest.raises(InvalidTransition):
        s.do(command)  # type: ignore[arg-type]


def test_dependencies_through_depends_on_and_references() -> None:
    s = running(op("a"), op("b", dependsOn="a"), op("c", payload={"x": "@<b.out::/v?>"}), op("d"))
    assert startable(s.state) == ["a", "d"]
    s.do_all([StartOperation("a", 1), RecordOutcome("a", 1, 1, Succeeded())])
    assert startable(s.state) == ["b", "d"]


def test_an_operation_cannot_start_twice_or_before_its_dependencies() -> None:
    s = running(op("a"), op("b", dependsOn="a"))
    with pytest.raises(InvalidTransition):
        s.do(StartOperation("b", 1))
    s.do(StartOperation("a", 1))
    with pytest.raises(InvalidTransition):
        s.do(StartOperation("a", 1))


def test_after_a_failure_nothing_new_starts_but_running_operations_are_recorded() -> None:
    s = running(op("a"), op("b"), op("c", dependsOn="a"))
    s.do_all([StartOperation("a", 1), StartOperation("b", 1)])
    s.do(RecordOutcome("a", 1, 1, boom("disk full")))
    assert startable(s.state) == []
    with pytest.raises(InvalidTransition, match="still runs"):
        s.do(Finish(1))
    assert s.do(RecordOutcome("b", 1, 1, Succeeded())) == [
        OperationSucceeded(operation="b", attempt=1)
    ]
    [failed] = s.do(Finish(1))
    assert isinstance(failed, AgendaFailed)
    assert failed.failed_operations == ["a"]
    assert failed.diagnostics[0].message == "Operation [a] failed: disk full"
    assert s.state.operation("c").status is OperationStatus.PENDING


def test_finish_refuses_while_operations_could_still_start() -> None:
    s = running(op("a"))
    with pytest.raises(InvalidTransition, match="ready to start"):
        s.do(Finish(1))


# --- progress and outcomes ---------------------------------------------------------------------


def test_progress_of_the_current_attempt_is_recorded_and_stale_progress_dropped() -> None:
    s = running(op("a"))
    s.do(StartOperation("a", 1))
    report = ProgressReport(40.0, "copying", {"JobId": "j"})
    assert s.do(ReportProgress("a", 1, 1, report)) == [
        OperationProgressed(
            operation="a",
            attempt=1,
            percent_complete=40.0,
            message="copying",
            params={"JobId": "j"},
        )
    ]
    assert s.do(ReportProgress("a", 2, 1, report)) == []
    assert s.do(ReportProgress("a", 1, 7, report)) == []


def test_failure_carries_the_runner_diagnostics() -> None:
    s = running(op("a"))
    s.do(StartOperation("a", 1))
    [failed] = s.do(RecordOutcome("a", 1, 1, boom()))
    assert isinstance(failed, OperationFailed)
    assert [d.message for d in failed.diagnostics] == ["boom"]
    assert s.state.failed == ("a",)


# --- fencing: reclaim and late outcomes ------------------------------------------------------


def test_reclaim_interrupts_running_operations_and_requeues() -> None:
    s = running(op("a"), op("b"))
    s.do_all(
        [StartOperation("a", 1), StartOperation("b", 1), RecordOutcome("a", 1, 1, Succeeded(7))]
    )
    assert s.do(Reclaim(1, "silent")) == [
        AgendaReclaimed(worker_id="w1", dispatch=1, reason="silent")
    ]
    assert s.state.status is AgendaStatus.READY
    assert s.state.operation("a").status is OperationStatus.SUCCEEDED
    assert s.state.operation("b").status is OperationStatus.PENDING
    assert s.state.operation("b").interrupted


def test_a_resumed_agenda_skips_succeeded_operations_and_resumes_the_interrupted_attempt() -> None:
    s = running(op("a"), op("b"))
    s.do_all(
        [
            StartOperation("a", 1),
            StartOperation("b", 1),
            RecordOutcome("a", 1, 1, Succeeded(7)),
            Reclaim(1, "silent"),
            Dispatch("w2"),
            Start(2),
        ]
    )
    assert startable(s.state) == ["b"]
    assert s.do(StartOperation("b", 2)) == [OperationStarted(operation="b", attempt=1, dispatch=2)]


def test_a_late_outcome_from_a_lost_lease_is_recorded_as_ignored_never_applied() -> None:
    s = running(op("a"))
    s.do_all(
        [
            StartOperation("a", 1),
            Reclaim(1, "silent"),
            Dispatch("w2"),
            Start(2),
            StartOperation("a", 2),
        ]
    )
    [ignored] = s.do(RecordOutcome("a", 1, 1, Succeeded("late")))
    assert isinstance(ignored, OperationOutcomeIgnored)
    assert (ignored.dispatch, ignored.outcome) == (1, "succeeded")
    assert s.state.operation("a").status is OperationStatus.RUNNING
    s.do(RecordOutcome("a", 1, 2, Succeeded("fresh")))
    assert s.state.operation("a").result == "fresh"
    [again] = s.do(RecordOutcome("a", 1, 2, Succeeded("twice")))
    assert isinstance(again, OperationOutcomeIgnored)
    assert s.state.operation("a").result == "fresh"


def test_only_the_current_dispatch_can_be_reclaimed() -> None:
    s = running(op("a"))
    with pytest.raises(InvalidTransition):
        s.do(Reclaim(2, "wrong"))


# --- generators ---------------------------------------------------------------------------------


GENERATED = {
    "operations": [
        {"name": "g1", "type": "sample"},
        {"name": "g2", "type": "sample", "payload": "@<g1.out>"},
    ],
    "params": {"added": "yes"},
}


def test_a_generator_injects_its_operations_in_the_same_append_as_its_success() -> None:
    s = running(op("make", "sample"), op("expand", "updateAgenda", payload="@<make.out>"))
    s.do_all([StartOperation("make", 1), RecordOutcome("make", 1, 1, Succeeded(GENERATED))])
    s.do(StartOperation("expand", 1))
    events = s.do(RecordOutcome("expand", 1, 1, Succeeded(GENERATED)))
    assert [type(e) for e in events] == [OperationSucceeded, OperationsGenerated]
    generated = events[1]
    assert isinstance(generated, OperationsGenerated)
    assert [o.params["generatedOperationParent"] for o in generated.operations] == ["expand"] * 2
    assert s.state.params == {"added": "yes"}
    assert startable(s.state) == ["g1"]


def test_generated_operations_are_injected_once_even_after_a_resume() -> None:
    s = running(op("expand", "updateAgenda"))
    s.do_all(
        [
            StartOperation("expand", 1),
            RecordOutcome("expand", 1, 1, Succeeded(GENERATED)),
            Reclaim(1, "silent"),
            Dispatch("w2"),
            Start(2),
        ]
    )
    replayed = replay(s.events)
    assert replayed is not None
    assert list(replayed.operations) == ["expand", "g1", "g2"]
    assert startable(replayed) == ["g1"]
    assert sum(isinstance(e, OperationsGenerated) for e in s.events) == 1


def test_a_generator_param_on_any_operation_type() -> None:
    marker = {"agenda.operation.generator": {"operationsJsonPointer": "/ops", "logOnly": False}}
    s = running(Operation(name="gen", type="sample", params=marker))
    s.do(StartOperation("gen", 1))
    events = s.do(RecordOutcome("gen", 1, 1, Succeeded({"ops": [{"name": "x", "type": "sample"}]})))
    assert isinstance(events[-1], OperationsGenerated)


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ({"nothing": []}, "Failed to extract field operations at [/operations]"),
        ({"operations": [{"name": "expand", "type": "sample"}]}, "unique"),
        ({"operations": [{"name": "z", "type": "sample", "payload": "@<nope.out>"}]}, "nope.out"),
        ({"operations": [{"name": "z"}]}, "must have a type"),
        ({"operations": [{"name": "z", "type": "sample", "colour": "red"}]}, "not operations"),
    ],
)
def test_a_bad_generation_fails_the_generator(result: object, problem: str) -> None:
    s = running(op("expand", "updateAgenda"))
    s.do(StartOperation("expand", 1))
    [failed] = s.do(RecordOutcome("expand", 1, 1, Succeeded(result)))
    assert isinstance(failed, OperationFailed)
    assert problem in " ".join(d.message for d in failed.diagnostics)


def test_log_only_generators_inject_nothing() -> None:
    s = running(op("expand", "updateAgenda"))
    s.do(StartOperation("expand", 1))
    events = s.do(RecordOutcome("expand", 1, 1, Succeeded({**GENERATED, "logOnly": True})))
    assert [type(e) for e in events] == [OperationSucceeded]


# --- time travel ------------------------------------------------------------------------------


def test_replaying_a_prefix_gives_the_state_at_that_version() -> None:
    s = running(op("a"))
    s.do_all([StartOperation("a", 1), RecordOutcome("a", 1, 1, Succeeded(1)), Finish(1)])
    states = [replay(s.events[:n]) for n in range(1, len(s.events) + 1)]
    assert [st.status.value for st in states if st] == [
        "ready",
        "dispatched",
        "running",
        "running",
        "running",
        "succeeded",
    ]
    assert [st.version for st in states if st] == [1, 2, 3, 4, 5, 6]


def test_can_start_agrees_with_startable_at_every_step() -> None:
    s = running(op("a"), op("b", dependsOn="a"), op("c", payload="@<b.out>"), op("d"))
    commands: list[Command] = [
        StartOperation("a", 1),
        StartOperation("d", 1),
        RecordOutcome("a", 1, 1, Succeeded()),
        StartOperation("b", 1),
        RecordOutcome("b", 1, 1, Succeeded()),
        RecordOutcome("d", 1, 1, boom()),
    ]
    for command in commands:
        assert [n for n in s.state.operations if can_start(s.state, n)] == startable(s.state)
        s.do(command)
    assert [n for n in s.state.operations if can_start(s.state, n)] == startable(s.state) == []
