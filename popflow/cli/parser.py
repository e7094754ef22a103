"""The command line's grammar: commands, options and the help text.

::

    popflow run FILE.json [--json] [--timeout SECONDS] [--grace SECONDS]
    popflow history AGENDA_ID [--json]
    popflow progress AGENDA_ID [--version N] [--json]
    popflow db migrate
    popflow projections rebuild

Every command also takes the storage options ``--dsn`` and ``--home`` and ``-v``; they may
come before or after the command's name. Each command's parser records the coroutine that
carries it out as ``args.handler``, so :func:`popflow.cli.main` only has to call it.
Usage errors are argparse's: a message and exit status 2.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeAlias

from popflow.cli.admin import migrate_command, rebuild_command
from popflow.cli.context import Context
from popflow.cli.errors import EXIT_STATUS_HELP
from popflow.cli.history import history_command
from popflow.cli.progress import progress_command
from popflow.cli.run import run_command

Command = Callable[[Context, argparse.Namespace], Awaitable[int]]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DESCRIPTION = """\
popflow: Priority Operation Processing as an event-sourced workflow engine on PostgreSQL.

Run an agenda (a DAG of operations) in this process and watch it, read an agenda's
history and progress, and administer the database."""

ENVIRONMENT_HELP = """\
environment:
  POPFLOW_DSN           PostgreSQL DSN to use (overridden by --dsn); memory:// keeps
                        everything in this process
  POPFLOW_HOME          where the private PostgreSQL lives when no DSN is given
                        (default $XDG_DATA_HOME/popflow, else ~/.local/share/popflow)
  POPFLOW_POSTGRES_BIN  PostgreSQL bin directory for the private server (default: the
                        binaries bundled with popflow)
  NO_COLOR              plain output even on a terminal
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="popflow",
        description=DESCRIPTION,
        epilog=f"{EXIT_STATUS_HELP}\n{ENVIRONMENT_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_run(commands)
    _add_history(commands)
    _add_progress(commands)
    _add_db(commands)
    _add_projections(commands)
    return parser


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: an option given before the command is not reset by the command's parser.
    storage = parser.add_argument_group("storage and logging")
    storage.add_argument(
        "--dsn",
        default=argparse.SUPPRESS,
        help="PostgreSQL DSN (default: $POPFLOW_DSN, else the private PostgreSQL under "
        "the home); memory:// keeps everything in this process",
    )
    storage.add_argument(
        "--home",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="home of the private PostgreSQL (default: $POPFLOW_HOME)",
    )
    storage.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more logging (-vv for debug); print tracebacks of errors",
    )


def _command(
    commands: Commands,
    name: str,
    handler: Command,
    summary: str,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(summary, 80),
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(parser)
    parser.set_defaults(handler=handler)
    return parser


def _add_run(commands: Commands) -> None:
    run = _command(
        commands,
        "run",
        run_command,
        "submit the agenda in FILE and run it to the end in this process, "
        "showing live progress per operation",
    )
    run.add_argument("file", metavar="FILE", help="the agenda, as POP JSON")
    run.add_argument(
        "--json", action="store_true", help="print only the final AgendaProgress as JSON"
    )
    run.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="give up after SECONDS (exit status 3; the agenda keeps its history)",
    )
    run.add_argument(
        "--grace",
        type=_seconds,
        metavar="SECONDS",
        help="on Ctrl-C or timeout, how long running operations may take to finish before "
        "the agenda is handed back (default 10)",
    )


def _add_history(commands: Commands) -> None:
    history = _command(
        commands, "history", history_command, "print an agenda's events as a timeline"
    )
    history.add_argument("agenda_id", metavar="AGENDA_ID")
    history.add_argument("--json", action="store_true", help="print the events as JSON")


def _add_progress(commands: Commands) -> None:
    progress = _command(
        commands,
        "progress",
        progress_command,
        "print an agenda's progress and its operations' (now, or after event N)",
    )
    progress.add_argument("agenda_id", metavar="AGENDA_ID")
    progress.add_argument(
        "--version",
        type=_version,
        metavar="N",
        help="the progress as it was after event N of the agenda's history",
    )
    progress.add_argument(
        "--json", action="store_true", help="print the AgendaProgress as POP JSON"
    )


def _add_db(commands: Commands) -> None:
    db = commands.add_parser("db", help="database administration")
    actions = db.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _command(actions, "migrate", migrate_command, "apply pending schema migrations")


def _add_projections(commands: Commands) -> None:
    projections = commands.add_parser("projections", help="read model administration")
    actions = projections.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _command(
        actions,
        "rebuild",
        rebuild_command,
        "rebuild the progress rows by replaying the whole event log",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also rejects NaN
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a positive number of seconds, got 0")
    return value


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an event number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"versions start at 1, got {value}")
    return value
