"""Live progress of ``popflow run``: one line per notable change of the agenda.

The display reads the agenda's own events as :meth:`Engine.watch
<popflow.bootstrap.Engine.watch>` delivers them, so what it prints is exactly what the
history records, timed by the events' ``recordedAt`` (seconds since the submission)
rather than by when the terminal happened to draw them::

    agenda 0b5c...: 5 operations, customer acme
    history: popflow history 0b5c...
       0.0s  probe started
       0.5s  probe succeeded in 0.5s
       0.5s  encode.hd started
       1.5s  encode.hd 50%
       ...
    agenda succeeded in 2.6s: 5 succeeded, 0 failed

Progress reports are throttled per operation (at most one line per ``progress_interval``
of recorded time, and never the same text twice), so a chatty handler cannot flood the
terminal; starts, outcomes, generated operations and reclaims are always shown. On a
terminal each line gets a coloured symbol; piped output is plain text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from popflow.cli.console import Console
from popflow.cli.describe import attempt_note, generated_names, progress_text
from popflow.cli.render import duration, first_message, plural, shorten
from popflow.events.store import RecordedEvent
from popflow.events.vocabulary import (
    Agenda,
    AgendaReclaimed,
    AgendaStarted,
    Event,
    OperationFailed,
    OperationOutcomeIgnored,
    OperationProgressed,
    OperationsGenerated,
    OperationStarted,
    OperationSucceeded,
)
from popflow.projections.progress import COMPLETE, FAILED, SUCCEEDED, AgendaProgress

_MARKS: Final = {
    "start": ("▶", "cyan"),
    "progress": ("·", "dim"),
    "success": ("✔", "green"),
    "failure": ("✘", "red"),
    "generated": ("+", "cyan"),
    "note": ("↺", "yellow"),
}
_TIME_COLUMN: Final = 7
_NOT_RUN: Final = "not run"


@dataclasses.dataclass(frozen=True)
class Line:
    kind: str
    """A key of :data:`_MARKS`: how the line is decorated on a terminal."""
    text: str


@dataclasses.dataclass(frozen=True)
class _Shown:
    at: datetime
    text: str


class LiveDisplay:
    """Turns batches of recorded events into progress lines on the console."""

    def __init__(self, console: Console, *, progress_interval: float = 0.5) -> None:
        self._console = console
        self._interval = progress_interval
        self._origin: datetime | None = None
        self._started: dict[str, datetime] = {}
        self._progress_shown: dict[str, _Shown] = {}
        self._lines: dict[type[Event], Callable[[Any, datetime], Line | None]] = {
            OperationStarted: self._operation_started,
            OperationProgressed: self._progressed,
            OperationSucceeded: self._succeeded,
            OperationFailed: self._failed,
            OperationOutcomeIgnored: self._ignored,
            OperationsGenerated: self._generated,
            AgendaReclaimed: self._reclaimed,
            AgendaStarted: self._resumed,
        }

    def header(self, agenda_id: str, agenda: Agenda, history_hint: str) -> None:
        count = plural(len(agenda.operations), "operation")
        self._console.say(
            self._console.paint(
                f"agenda {agenda_id}: {count}, customer {agenda.customer_id}", "bold"
            )
        )
        self._console.say(f"history: {history_hint}")

    def show(self, events: Sequence[RecordedEvent]) -> None:
        for recorded in events:
            self._origin = self._origin or recorded.recorded_at
            describe = self._lines.get(type(recorded.event))
            line = describe(recorded.event, recorded.recorded_at) if describe else None
            if line is not None:
                self._print(recorded.recorded_at, line)

    def summary(self, progress: AgendaProgress) -> None:
        """The final line: the agenda's outcome, how long it took, and the counts."""
        elapsed = ((progress.completed_time or progress.updated_time) - progress.added_time) / 1000
        outcome = progress.processing_state_message
        line = Line(
            "success" if outcome == SUCCEEDED else "failure",
            f"agenda {outcome} in {duration(elapsed)}: {_counts(progress)}",
        )
        self._print(None, line)

    def _print(self, at: datetime | None, line: Line) -> None:
        if at is None or self._origin is None:  # the summary: flush left, no time column
            self._console.say(f"{self._mark(line.kind)}{shorten(line.text, self._console.width)}")
            return
        clock = duration((at - self._origin).total_seconds())
        room = self._console.width - _TIME_COLUMN - 4
        self._console.say(
            f"{clock:>{_TIME_COLUMN}}  {self._mark(line.kind)}{shorten(line.text, room)}"
        )

    def _mark(self, kind: str) -> str:
        if not self._console.colour:
            return ""
        symbol, colour = _MARKS[kind]
        return self._console.paint(symbol, colour) + " "

    # --- one method per notable event: the line to print, or None --------------------------

    def _operation_started(self, event: OperationStarted, at: datetime) -> Line:
        self._started[event.operation] = at
        self._progress_shown.pop(event.operation, None)
        return Line("start", f"{event.operation} started{attempt_note(event.attempt)}")

    def _progressed(self, event: OperationProgressed, at: datetime) -> Line | None:
        text, shown = progress_text(event), self._progress_shown.get(event.operation)
        if shown and (shown.text == text or (at - shown.at).total_seconds() < self._interval):
            return None
        self._progress_shown[event.operation] = _Shown(at, text)
        return Line("progress", text)

    def _succeeded(self, event: OperationSucceeded, at: datetime) -> Line:
        took = self._took(event.operation, at, "in")
        return Line("success", f"{event.operation} succeeded{took}")

    def _failed(self, event: OperationFailed, at: datetime) -> Line:
        took = self._took(event.operation, at, "after")
        reason = first_message(event.diagnostics) or "no diagnostic"
        return Line("failure", f"{event.operation} failed{took}: {reason}")

    def _ignored(self, event: OperationOutcomeIgnored, _at: datetime) -> Line:
        return Line(
            "note",
            f"late {event.outcome} outcome of {event.operation} (attempt {event.attempt}) "
            f"ignored: {event.reason}",
        )

    def _generated(self, event: OperationsGenerated, _at: datetime) -> Line:
        return Line("generated", f"{event.parent} generated {generated_names(event)}")

    def _reclaimed(self, event: AgendaReclaimed, _at: datetime) -> Line:
        return Line("note", f"agenda reclaimed from {event.worker_id}: {event.reason}")

    def _resumed(self, event: AgendaStarted, _at: datetime) -> Line | None:
        if event.dispatch == 1:
            return None
        return Line("note", f"agenda resumed by {event.worker_id} (dispatch {event.dispatch})")

    def _took(self, operation: str, at: datetime, word: str) -> str:
        """`` in 1.5s`` (with ``word``) since the operation's start, when it was seen."""
        began = self._started.get(operation)
        return "" if began is None else f" {word} {duration((at - began).total_seconds())}"


def _counts(progress: AgendaProgress) -> str:
    """``4 succeeded, 1 failed (transcode), 2 not run (publish, notify)``."""
    names: dict[str, list[str]] = {SUCCEEDED: [], FAILED: [], _NOT_RUN: []}
    for op in progress.operation_progress or []:
        outcome = op.processing_state_message if op.processing_state == COMPLETE else None
        names.get(outcome or _NOT_RUN, names[_NOT_RUN]).append(op.operation)
    parts = [f"{len(names[SUCCEEDED])} succeeded", _listed(FAILED, names[FAILED])]
    if names[_NOT_RUN]:
        parts.append(_listed(_NOT_RUN, names[_NOT_RUN]))
    return ", ".join(parts)


def _listed(outcome: str, operations: Sequence[str]) -> str:
    names = f" ({', '.join(operations)})" if operations else ""
    return f"{len(operations)} {outcome}{names}"
