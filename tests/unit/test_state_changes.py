"""agenda.updated and agenda.deleted: what they do to the agenda's state, its decisions, its
progress and its place in the queue."""

from __future__ import annotations

from typing import Any

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
    decide,
)
from popflow.engine.runner import ProgressReport, Succeeded
from popflow.engine.state import AgendaState, AgendaStatus, evolve
from popflow.errors import InvalidTransition
from popflow.events.vocabulary import (
    AgendaDeleted,
    AgendaUpdated,
    OperationOutcomeIgnored,
    OperationsGenerated,
)
from popflow.projections import queue
from popflow.projections.progress import fold_all
from tests.support.agendas import Scenario, agenda, op, recorded


def scenario(**params: Any) -> Scenario:
    return Scenario(agenda(op("a"), link_id="job-1", **params))


def test_an_update_changes_the_descriptive_fields_and_keeps_the_rest() -> None:
    s = scenario(externalId="e-1")
    s.do(Dispatch("w1"))
    before = s.state
    event = AgendaUpdated(
        changes={"title": "renamed", "linkId": None, "jobId": "j", "params": {"k": 1}, "cid": "x"},
        time=5,
    )
    after = evolve(before, event)
    assert (after.agenda.title, after.agenda.link_id, after.agenda.job_id) == (
        "renamed",
        "job-1",
        "j",
    )
    assert after.agenda.params == after.params == {"k": 1}
    assert after.agenda.cid == before.agenda.cid
    assert (after.status, after.dispatch, after.worker_id) == (
        AgendaStatus.DISPATCHED,
        1,
        "w1",
    )
    assert after.version == before.version + 1


def test_an_update_without_params_keeps_the_generated_ones() -> None:
    s = scenario()
    state = evolve(s.state, OperationsGenerated(parent="a", operations=[op("b")], params={"g": 1}))
    after = evolve(state, AgendaUpdated(changes={"title": "t"}, time=5))
    assert after.params == {"g": 1}
    assert [o.name for o in after.agenda.operations] == ["a", "b"]


@pytest.mark.parametrize("held", [False, True])
def test_a_deleted_agenda_is_final_and_unleased(held: bool) -> None:
    s = scenario(**({"doNotRun": True} if held else {}))
    deleted = evolve(s.state, AgendaDeleted(time=5))
    assert deleted.status is AgendaStatus.DELETED
    assert deleted.status.is_final
    assert not deleted.status.is_leased
    assert deleted.worker_id is None


def deleted_after_a_reclaim() -> AgendaState:
    """Ran a while, lost its lease, then was deleted: the old worker still holds dispatch 1."""
    s = scenario()
    s.do_all([Dispatch("w1"), Start(1), StartOperation("a", 1), Reclaim(1, "silent")])
    return evolve(s.state, AgendaDeleted(time=5))


@pytest.mark.parametrize(
    "command",
    [Dispatch("w2"), Start(1), StartOperation("a", 1), Finish(1), Reclaim(1, "late")],
)
def test_a_deleted_agenda_refuses_every_command(command: Command) -> None:
    with pytest.raises(InvalidTransition):
        decide(deleted_after_a_reclaim(), command, 10)


def test_a_deleted_agenda_drops_late_reports_and_records_late_outcomes_as_ignored() -> None:
    state = deleted_after_a_reclaim()
    assert decide(state, ReportProgress("a", 1, 1, ProgressReport(percent_complete=5)), 10) == []
    [ignored] = decide(state, RecordOutcome("a", 1, 1, Succeeded(1)), 10)
    assert isinstance(ignored, OperationOutcomeIgnored)
    assert evolve(state, ignored).status is AgendaStatus.DELETED


def test_progress_follows_an_update_and_stays_after_deletion() -> None:
    s = scenario(externalId="e-1")
    changes = {"linkId": "job-2", "params": {"externalId": 7}}
    view = fold_all(recorded([*s.events, AgendaUpdated(changes=changes, time=5)]))
    assert view is not None
    progress = view.agenda
    assert (progress.link_id, progress.external_id, progress.params) == (
        "job-2",
        "7",
        {"externalId": 7},
    )
    assert progress.updated_time > progress.added_time
    unchanged = fold_all(recorded([*s.events, AgendaUpdated(changes={"title": "t"}, time=5)]))
    assert unchanged is not None
    assert (unchanged.agenda.link_id, unchanged.agenda.external_id) == ("job-1", "e-1")
    deleted = fold_all(recorded([*s.events, AgendaDeleted(time=5)]))
    assert deleted is not None
    assert deleted == fold_all(recorded(s.events))


@pytest.mark.parametrize("dispatched", [False, True])
def test_the_queue_drops_a_deleted_agenda(dispatched: bool) -> None:
    s = scenario()
    if dispatched:
        s.do(Dispatch("w1"))  # the fold drops the entry whatever its status
    entry = None
    for event in recorded([*s.events, AgendaUpdated(changes={"title": "t"}, time=4)]):
        entry = queue.fold(entry, event)
    assert entry is not None
    [deleted] = recorded([AgendaDeleted(time=5)], start=len(s.events) + 2)
    assert deleted.type in queue.RELEVANT_TYPES
    assert queue.fold(entry, deleted) is None
