"""``popflow history AGENDA_ID``: an agenda's events, as a timeline or as JSON.

The history is the agenda's stream exactly as recorded, oldest first. Each line shows the
event's global position, its version in the stream, when it was recorded (UTC), its type,
and its essentials (:mod:`popflow.cli.describe`), cut to the width of the terminal::

    pos  ver  recorded (UTC)            type                 details
    101    1  2025-06-01T12:00:00.123Z  agenda.submitted     5 operations, customer acme, ...
    104    4  2025-06-01T12:00:00.131Z  operation.started    probe (attempt 1)

``--json`` prints one JSON array with an object per event: ``position``, ``version``,
``streamId``, ``type``, ``recordedAt`` (ISO 8601, UTC, milliseconds, ``Z``) and ``data``,
the event's fields as stored (POP's camelCase names, without the ``type`` tag).

Reading needs no worker: only the storage is opened. An unknown id is the caller's
mistake (exit status 2), and with the embedded default a home where nothing ever ran is
not even started (:func:`~popflow.cli.context.require_database`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Final

from popflow.bootstrap import open_storage
from popflow.cli.context import Context, require_database
from popflow.cli.describe import describe
from popflow.cli.errors import ExitStatus
from popflow.cli.render import json_text, shorten
from popflow.engine.service import AgendaService
from popflow.events.export import event_document, utc_timestamp
from popflow.events.store import RecordedEvent

_TIME_HEADING: Final = "recorded (UTC)"
_TIME_WIDTH: Final = len("2025-06-01T12:00:00.123Z")
_MIN_DETAILS: Final = 20


async def history_command(context: Context, args: argparse.Namespace) -> int:
    events = await read_history(context, args.agenda_id)
    if args.json:
        context.console.say(json_text([event_document(recorded) for recorded in events]))
        return ExitStatus.OK
    heading, *lines = timeline(events, width=context.console.width)
    context.console.say(context.console.paint(heading, "bold"))
    for line in lines:
        context.console.say(line)
    return ExitStatus.OK


async def read_history(context: Context, agenda_id: str) -> list[RecordedEvent]:
    """The agenda's recorded events; NotFound for an unknown id."""
    require_database(context, agenda_id)
    async with open_storage(context.settings) as storage:
        return await AgendaService(storage.events).history(agenda_id)


def timeline(events: Sequence[RecordedEvent], *, width: int) -> list[str]:
    """A heading, then one line per event, each at most ``width`` characters (or so)."""
    pos_width = max(len("pos"), len(str(max(e.position for e in events))))
    ver_width = max(len("ver"), len(str(max(e.version for e in events))))
    type_width = max(len(e.type) for e in events)

    def line(pos: str, ver: str, at: str, kind: str, details: str) -> str:
        text = f"{pos:>{pos_width}}  {ver:>{ver_width}}  {at:<{_TIME_WIDTH}}  {kind:<{type_width}}"
        room = max(width - len(text) - 2, _MIN_DETAILS)
        return f"{text}  {shorten(details, room)}".rstrip()

    heading = line("pos", "ver", _TIME_HEADING, "type", "details")
    return [heading] + [
        line(
            str(e.position),
            str(e.version),
            utc_timestamp(e.recorded_at),
            e.type,
            describe(e.event),
        )
        for e in events
    ]
