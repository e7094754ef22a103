"""Small builders for agendas and histories in tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from popflow.engine.decide import Command, decide, submitted
from popflow.engine.router import DEFAULT_INSIGHT
from popflow.engine.state import AgendaState, evolve
from popflow.events.store import RecordedEvent
from popflow.events.vocabulary import Agenda, Event, Operation, event_type

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def op(name: str, type_: str = "sample", payload: Any = None, **params: Any) -> Operation:
    return Operation(name=name, type=type_, payload=payload, params=params)


def agenda(
    *operations: Operation, customer: str = "acme", link_id: str | None = None, **params: Any
) -> Agenda:
    return Agenda(
        customer_id=customer,
        operations=list(operations),
        params=params,
        cid="cid-1",
        link_id=link_id,
    )


def first_event(spec: Agenda, agenda_id: str = "a-1", progress_id: str = "p-1") -> Event:
    return submitted(spec, agenda_id=agenda_id, progress_id=progress_id, insight=DEFAULT_INSIGHT)


def recorded(
    events: Iterable[Event], *, stream: str = "agenda-a-1", start: int = 1
) -> list[RecordedEvent]:
    return [
        RecordedEvent(
            start + i,
            stream,
            start + i,
            event_type(e),
            e,
            EPOCH + timedelta(milliseconds=start + i),
        )
        for i, e in enumerate(events)
    ]


class Scenario:
    """Drives an agenda's state through commands, keeping every event (a pure fake log)."""

    def __init__(self, spec: Agenda, *, agenda_id: str = "a-1", progress_id: str = "p-1") -> None:
        self.events: list[Event] = [first_event(spec, agenda_id, progress_id)]
        self.state: AgendaState = evolve(None, self.events[0])
        self.now = 1_000

    def do(self, command: Command) -> list[Event]:
        new = decide(self.state, command, self.now)
        for event in new:
            self.state = evolve(self.state, event)
        self.events.extend(new)
        return new

    def do_all(self, commands: Sequence[Command]) -> list[Event]:
        return [e for c in commands for e in self.do(c)]
