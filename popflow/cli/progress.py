"""``popflow progress AGENDA_ID``: the AgendaProgress with its operations, now or at a version.

Two sources, one shape (POP's AgendaProgress with its ``operationProgress``):

* by default, the **progress projection**, as POP clients read it. The command first
  brings the projection up to date with the log (as every engine does continuously), so
  the answer reflects every recorded event even when no popflow process is running;
* with ``--version N``, the progress **as it was after event N** of the agenda's stream,
  computed by folding the history up to there (time travel; ``N`` as listed by
  ``popflow history``). ``--version 1`` is the freshly submitted agenda: WAITING.

Human output: the agenda's state, message and percent, its correlation fields and times,
its diagnostics, then one line per operation (name, state, message, percent, attempts,
and the first diagnostic of a failed one). ``--json`` prints the POP JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Final

import msgspec

from popflow.bootstrap import Storage, open_storage
from popflow.cli.context import Context, require_database
from popflow.cli.errors import ExitStatus
from popflow.cli.render import duration, first_message, percent, shorten, utc_from_epoch_ms
from popflow.engine.service import AgendaService
from popflow.errors import NotFound
from popflow.projections.progress import AgendaProgress, OperationProgress
from popflow.projections.runner import ProjectionRunner

_TABLE_HEADING: Final = ("operation", "state", "message", "percent", "attempts", "")
_ALIGN: Final = ("<", "<", "<", ">", ">")
"""How the name, state, message, percent and attempts columns align; the reason is free."""
_MAX_CELL: Final = 40


async def progress_command(context: Context, args: argparse.Namespace) -> int:
    progress = await read_progress(context, args.agenda_id, args.version)
    if args.json:
        context.console.say(msgspec.json.encode(progress).decode())
        return ExitStatus.OK
    heading, *lines = progress_lines(progress, width=context.console.width, version=args.version)
    context.console.say(context.console.paint(heading, "bold"))
    for line in lines:
        context.console.say(line)
    return ExitStatus.OK


async def read_progress(context: Context, agenda_id: str, version: int | None) -> AgendaProgress:
    """The projected progress, or the progress after event ``version`` when given."""
    require_database(context, agenda_id)
    async with open_storage(context.settings) as storage:
        if version is not None:
            return await AgendaService(storage.events).progress_at(agenda_id, version)
        return await _projected(storage, agenda_id, context.settings.projection_batch)


async def _projected(storage: Storage, agenda_id: str, batch_size: int) -> AgendaProgress:
    await ProjectionRunner(storage.events, storage.progress, batch_size=batch_size).catch_up()
    progress = await storage.progress.agenda_progress(agenda_id)
    if progress is None:
        raise NotFound(f"no agenda with id {agenda_id}")
    return progress


def progress_lines(
    progress: AgendaProgress, *, width: int, version: int | None = None
) -> list[str]:
    """The agenda's line, its details, its diagnostics, then a table of its operations."""
    when = "now" if version is None else f"after event {version}"
    heading = (
        f"agenda {progress.agenda_id} ({when}): {progress.processing_state} "
        f"{progress.processing_state_message} {percent(progress.percent_complete)}"
    )
    lines = [heading, *(f"  {shorten(text, width - 2)}" for text in _details(progress))]
    lines += [f"  diagnostic: {shorten(d.message, width - 14)}" for d in progress.diagnostic_events]
    return lines + _operation_table(progress.operation_progress or [], width)


def _details(progress: AgendaProgress) -> list[str]:
    """Who the agenda is for, and when it happened."""
    who = [f"customer {progress.customer_id}"]
    who += [f"cid {progress.cid}"] if progress.cid else []
    who += [f"link {progress.link_id}"] if progress.link_id else []
    who.append(f"attempts {progress.attempts_completed} of {progress.maximum_attempts}")
    when = [f"added {utc_from_epoch_ms(progress.added_time)}"]
    if progress.completed_time is not None:
        took = duration((progress.completed_time - progress.added_time) / 1000)
        when.append(f"completed {utc_from_epoch_ms(progress.completed_time)} ({took})")
    return [", ".join(who), ", ".join(when)]


def _operation_table(operations: Sequence[OperationProgress], width: int) -> list[str]:
    """Aligned columns (name, state, message, percent, attempts), then a failure's reason."""
    if not operations:
        return ["  (no operations)"]
    rows = [_TABLE_HEADING] + [_cells(op) for op in operations]
    widths = [min(max(len(row[i]) for row in rows), _MAX_CELL) for i in range(len(_ALIGN))]
    lines = []
    for *cells, note in rows:
        text = "  " + "  ".join(
            f"{shorten(cell, size):{align}{size}}"
            for cell, align, size in zip(cells, _ALIGN, widths, strict=True)
        )
        lines.append(f"{text}  {shorten(note, max(width - len(text) - 2, 20))}".rstrip())
    return lines


def _cells(op: OperationProgress) -> tuple[str, ...]:
    return (
        op.operation,
        op.processing_state,
        op.processing_state_message or "",
        percent(op.percent_complete),
        str(op.attempt_count),
        first_message(op.diagnostic_events) or "",
    )
