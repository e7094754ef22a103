"""``popflow run FILE``: submit an agenda and run it to the end in this process.

The command is a one-agenda engine:

1. the file is read and validated first (:mod:`popflow.cli.agenda_file`): an invalid
   agenda never reaches the database, and does not even start the private PostgreSQL;
2. an engine is opened that claims nothing and reclaims nothing
   (``open_engine(settings, claim=False, reclaim=False)``): it runs only the agenda that
   :meth:`Engine.start <popflow.bootstrap.Engine.start>` hands it, and leaves the queue
   to the workers of other processes;
3. :meth:`Engine.watch <popflow.bootstrap.Engine.watch>` feeds the live display
   (:mod:`popflow.cli.live`) until the agenda completes, and the final AgendaProgress is
   read from the projection once it reflects the last event (read-your-writes);
4. the exit status says how the agenda ended: 0 succeeded, 1 failed.

Stopping early is graceful. On ``--timeout``, Ctrl-C or SIGTERM the engine stops: running
operations get the grace period (``--grace``) to finish, then they are cancelled and the
agenda is handed back (``agenda.reclaimed``), so that any worker resumes it where it
stopped; its history stays. A second Ctrl-C quits at once (the lease then expires).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import msgspec
from anyio.abc import TaskStatus

from popflow.bootstrap import Engine, open_engine
from popflow.cli.agenda_file import load_agenda
from popflow.cli.context import Context, announce_first_run
from popflow.cli.errors import ExitStatus
from popflow.cli.live import LiveDisplay
from popflow.cli.render import duration
from popflow.events.store import RecordedEvent
from popflow.projections.progress import SUCCEEDED, AgendaProgress
from popflow.settings import Settings

Show = Callable[[Sequence[RecordedEvent]], None]


@dataclasses.dataclass(frozen=True)
class Stopped:
    """The agenda was left unfinished: why, and the exit status that says so."""

    reason: str
    status: int


async def run_command(context: Context, args: argparse.Namespace) -> int:
    agenda = load_agenda(Path(args.file), context.settings)
    settings = _with_grace(context.settings, args.grace)
    display = None if args.json else LiveDisplay(context.console)
    announce_first_run(context)
    async with open_engine(settings, claim=False, reclaim=False) as engine:
        agenda_id = (await engine.start(agenda)).agenda_id
        if display is not None:
            display.header(agenda_id, agenda, _history_hint(context, agenda_id))
        show = display.show if display is not None else _show_nothing
        outcome = await follow(engine, agenda_id, show, timeout=args.timeout)
        if isinstance(outcome, Stopped):
            _announce_stop(context, outcome, settings.worker.shutdown_grace)
    if isinstance(outcome, Stopped):
        context.console.note(f"stopped; its history: {_history_hint(context, agenda_id)}")
        return outcome.status
    if display is not None:
        display.summary(outcome)
    else:
        context.console.say(msgspec.json.encode(outcome).decode())
    succeeded = outcome.processing_state_message == SUCCEEDED
    return ExitStatus.OK if succeeded else ExitStatus.AGENDA_FAILED


async def follow(
    engine: Engine, agenda_id: str, show: Show, *, timeout: float | None
) -> AgendaProgress | Stopped:
    """Show the agenda's events until it completes, the timeout elapses or a signal comes."""
    progress: AgendaProgress | None = None
    interrupt = Interrupt()
    async with anyio.create_task_group() as tg:
        await tg.start(cancel_on_signal, tg.cancel_scope, interrupt)
        with anyio.move_on_after(timeout):
            progress = await _until_complete(engine, agenda_id, show)
        tg.cancel_scope.cancel()
    if progress is not None:
        return progress
    if interrupt.signal is not None:
        reason = "interrupted" if interrupt.signal == signal.SIGINT else "terminated"
        return Stopped(reason, 128 + interrupt.signal)
    timed_out = f"the agenda did not finish within {duration(timeout or 0)} (--timeout)"
    return Stopped(timed_out, ExitStatus.INFRASTRUCTURE)


async def _until_complete(engine: Engine, agenda_id: str, show: Show) -> AgendaProgress:
    last_position = 0
    async for _view, events in engine.watch(agenda_id):
        show(events)
        last_position = events[-1].position
    return await engine.progress(agenda_id, at_least=last_position)


@dataclasses.dataclass
class Interrupt:
    signal: signal.Signals | None = None


async def cancel_on_signal(
    scope: anyio.CancelScope,
    interrupt: Interrupt,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Turn the first SIGINT or SIGTERM into a cancellation of ``scope``.

    The receiver closes after the first signal, which restores the default handlers: a
    second Ctrl-C raises KeyboardInterrupt and quits without waiting for the grace period.
    """
    if threading.current_thread() is not threading.main_thread():
        task_status.started()  # signals are delivered to the main thread only
        return
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for received in signals:
            interrupt.signal = signal.Signals(received)
            scope.cancel()
            return


def _with_grace(settings: Settings, grace: float | None) -> Settings:
    if grace is None:
        return settings
    return settings.replace(worker=dataclasses.replace(settings.worker, shutdown_grace=grace))


def _history_hint(context: Context, agenda_id: str) -> str:
    if context.settings.uses_memory:
        return "kept in memory only (memory://): it ends with this command"
    return context.suggest("history", agenda_id)


def _announce_stop(context: Context, stopped: Stopped, grace: float) -> None:
    context.console.note(
        f"{stopped.reason}; stopping: running operations get up to {duration(grace)} to "
        "finish, then the agenda is handed back (Ctrl-C again quits at once)"
    )


def _show_nothing(_events: Sequence[RecordedEvent]) -> None:
    """``--json`` prints the final AgendaProgress only."""
