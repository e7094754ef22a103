"""The AgendaProgress / OperationProgress fold and the ProgressSummary (pop-spec §2.7)."""

from __future__ import annotations

import msgspec
import pytest

from popflow.engine.decide import (
    Dispatch,
    Finish,
    Reclaim,
    RecordOutcome,
    ReportProgress,
    Start,
    StartOperation,
)
from popflow.engine.runner import Failed, ProgressReport, Succeeded
from popflow.events.vocabulary import DiagnosticEvent
from popflow.projections.progress import (
    COMPLETE,
    EXECUTING,
    WAITING,
    AgendaProgress,
    ProgressView,
    fold,
    fold_all,
)
from popflow.projections.summary import summarize
from tests.support.agendas import Scenario, agenda, op, recorded


def view_of(s: Scenario) -> ProgressView:
    view = fold_all(recorded(s.events))
    assert view is not None
    return view


def test_a_submitted_agenda_waits_with_every_operation_pending() -> None:
    s = Scenario(agenda(op("sample.1"), externalId=42, maximumAttempts=2))
    view = view_of(s)
    progress = view.joined()
    assert (progress.processing_state, progress.processing_state_message) == (WAITING, "pending")
    assert (progress.id, progress.agenda_id, progress.external_id) == ("p-1", "a-1", "42")
    assert (progress.maximum_attempts, progress.attempts_completed, progress.percent_complete) == (
        2,
        0,
        0,
    )
    assert progress.agenda_insight is not None
    [operation] = progress.operation_progress or []
    assert operation.id == "p-1-sample.1"
    assert (operation.processing_state, operation.processing_state_message) == (WAITING, "pending")
    assert (operation.attempt_count, operation.percent_complete) == (0, 0)


def test_the_pop_sample_end_state() -> None:
    s = Scenario(agenda(op("sample.1")))
    s.do_all(
        [
            Dispatch("w"),
            Start(1),
            StartOperation("sample.1", 1),
            RecordOutcome("sample.1", 1, 1, Succeeded({"actionData": "output!"})),
            Finish(1),
        ]
    )
    progress = view_of(s).joined()
    assert (progress.processing_state, progress.processing_state_message) == (COMPLETE, "succeeded")
    assert (progress.percent_complete, progress.attempts_completed) == (100, 1)
    assert progress.started_time is not None
    assert progress.completed_time is not None
    [operation] = progress.operation_progress or []
    assert (operation.processing_state, operation.processing_state_message) == (
        COMPLETE,
        "succeeded",
    )
    assert operation.result_payload == '{"actionData":"output!"}'
    assert (operation.percent_complete, operation.attempt_count) == (100, 1)
    assert operation.attempt_time is not None


def test_percent_rolls_up_running_and_finished_operations() -> None:
    s = Scenario(agenda(op("a"), op("b"), op("c"), op("d")))
    s.do_all([Dispatch("w"), Start(1), StartOperation("a", 1), StartOperation("b", 1)])
    s.do(ReportProgress("a", 1, 1, ProgressReport(50.0, "half", {"JobId": "j"})))
    s.do(RecordOutcome("b", 1, 1, Succeeded()))
    view = view_of(s)
    assert view.agenda.processing_state == EXECUTING
    assert view.agenda.processing_state_message == "Running Operations"
    assert view.agenda.percent_complete == pytest.approx((50 + 100) / 4)
    a = view.operations["a"]
    assert (a.percent_complete, a.processing_state_message, a.params) == (
        50,
        "half",
        {"JobId": "j"},
    )


def test_a_failed_agenda_is_complete_at_one_hundred_percent_with_diagnostics() -> None:
    s = Scenario(agenda(op("a"), op("b", dependsOn="a")))
    s.do_all(
        [
            Dispatch("w"),
            Start(1),
            StartOperation("a", 1),
            RecordOutcome("a", 1, 1, Failed([DiagnosticEvent(message="nope", time=5)])),
            Finish(1),
        ]
    )
    view = view_of(s)
    assert (view.agenda.processing_state, view.agenda.processing_state_message) == (
        COMPLETE,
        "failed",
    )
    assert view.agenda.percent_complete == 100
    assert view.agenda.attempts_completed == 1
    assert "Operation [a] failed: nope" in view.agenda.diagnostic_events[0].message
    assert view.operations["a"].processing_state_message == "failed"
    assert view.operations["a"].diagnostic_events[0].message == "nope"
    assert view.operations["b"].processing_state == WAITING


def test_a_reclaim_returns_running_operations_to_waiting_and_says_why() -> None:
    s = Scenario(agenda(op("a")))
    s.do_all([Dispatch("w"), Start(1), StartOperation("a", 1), Reclaim(1, "silent for 30 s")])
    view = view_of(s)
    assert view.agenda.processing_state == WAITING
    assert view.operations["a"].processing_state == WAITING
    assert view.operations["a"].attempt_count == 1
    assert "silent for 30 s" in view.agenda.diagnostic_events[-1].message


def test_stored_rows_omit_nulls_like_pop() -> None:
    s = Scenario(agenda(op("a")))
    encoded = msgspec.json.decode(msgspec.json.encode(view_of(s).agenda))
    assert "completedTime" not in encoded
    assert "operationProgress" not in encoded
    assert encoded["percentComplete"] == 0


# --- ProgressSummary, pop-spec §9.2 cases 32 and 33 ------------------------------------------


def progress(state: str, message: str = "", percent: float = 0.0) -> AgendaProgress:
    return AgendaProgress(
        id="p",
        agenda_id="a",
        customer_id="c",
        processing_state=state,
        processing_state_message=message,
        percent_complete=percent,
        attempts_completed=0,
        maximum_attempts=3,
        params={},
        diagnostic_events=[],
        added_time=0,
        updated_time=0,
    )


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["COMPLETE"], "COMPLETE"),
        (["WAITING"], "WAITING"),
        (["EXECUTING"], "EXECUTING"),
        (["WAITING", "WAITING"], "WAITING"),
        (["COMPLETE", "WAITING"], "EXECUTING"),
        (["COMPLETE", "COMPLETE"], "COMPLETE"),
        ([], "WAITING"),  # the original said COMPLETE (pop-spec §10 item 19)
    ],
)
def test_summary_state(states: list[str], expected: str) -> None:
    assert summarize([progress(s) for s in states]).processing_state == expected


def test_any_failed_agenda_makes_the_summary_complete_without_percent() -> None:
    summary = summarize([progress("EXECUTING", percent=10), progress("COMPLETE", "FAILED")])
    assert (summary.processing_state, summary.processing_percent) == ("COMPLETE", None)


@pytest.mark.parametrize(
    ("percents", "expected"),
    [
        ([], 0.0),
        ([0.0], 0.0),
        ([0.0, 45.0], 22.5),
        ([45.0, 0.0], 22.5),
        ([150.0, 150.0, 150.0], 100.0),
    ],
)
def test_summary_percent(percents: list[float], expected: float) -> None:
    assert (
        summarize([progress("EXECUTING", percent=p) for p in percents]).processing_percent
        == expected
    )


def test_the_roll_up_after_every_event_is_the_mean_of_the_shares() -> None:
    """The fold recomputes the roll-up only when an operation's share moves; after every
    event it must still be what a recomputation over every operation gives."""
    s = Scenario(agenda(op("a"), op("b"), op("c")))
    s.do_all([Dispatch("w"), Start(1), StartOperation("a", 1), StartOperation("b", 1)])
    s.do(ReportProgress("a", 1, 1, ProgressReport(30.0)))
    s.do(ReportProgress("a", 1, 1, ProgressReport(30.0, "same share")))
    s.do(ReportProgress("b", 1, 1, ProgressReport(250.0)))
    s.do(RecordOutcome("a", 1, 1, Succeeded()))
    s.do(Reclaim(1, "gone"))
    s.do_all([Dispatch("w2"), Start(2), StartOperation("b", 2), StartOperation("c", 2)])
    s.do(RecordOutcome("b", 2, 2, Failed([DiagnosticEvent(message="no", time=1)])))
    view, seen = None, []
    for event in recorded(s.events):
        view = fold(view, event)
        shares = [
            100.0
            if o.processing_state == COMPLETE
            else min(100.0, o.percent_complete)
            if o.processing_state == EXECUTING
            else 0.0
            for o in view.operations.values()
        ]
        assert view.agenda.percent_complete == sum(shares) / len(shares), event.type
        seen.append(view.agenda.percent_complete)
    assert 10.0 in seen  # a at 30 of 3 operations
    assert (100 + 30) / 3 in seen  # b's 250 % counts as a whole operation
