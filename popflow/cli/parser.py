"""The command line's grammar: commands, options and the help text.

::

    popflow run FILE.json [--json] [--timeout SECONDS] [--grace SECONDS]
    popflow serve [--host H] [--port P] [--no-worker] [--insight ID ...] [--tokens-file FILE]
                  [--jwt-secret-file FILE | --jwt-public-key FILE] [--insecure]
    popflow worker [--resource-pool ID] [--insight ID ...] [--concurrency N]
                   [--lease-timeout SECONDS] [--grace SECONDS]
    popflow queues [--insight ID ...] [--json]
    popflow history AGENDA_ID [--json]
    popflow progress AGENDA_ID [--version N] [--json]
    popflow db migrate
    popflow projections rebuild
    popflow token create --user ID --account ACCOUNT [--account ...] [--superuser]
                         [--tokens-file FILE]

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
from popflow.cli.queues import queues_command
from popflow.cli.run import run_command
from popflow.cli.serve import serve_command
from popflow.cli.token import create_token_command
from popflow.cli.worker import worker_command
from popflow.engine.worker import WorkerSettings

Command = Callable[[Context, argparse.Namespace], Awaitable[int]]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DESCRIPTION = """\
popflow: Priority Operation Processing as an event-sourced workflow engine on PostgreSQL.

Run an agenda (a DAG of operations) in this process and watch it, serve the API, run
workers, look at the queues, read an agenda's history and progress, and administer the
database."""

ENVIRONMENT_HELP = """\
environment:
  POPFLOW_DSN           PostgreSQL DSN to use (overridden by --dsn); memory:// keeps
                        everything in this process
  POPFLOW_HOME          where the private PostgreSQL lives when no DSN is given
                        (default $XDG_DATA_HOME/popflow, else ~/.local/share/popflow)
  POPFLOW_POSTGRES_BIN  PostgreSQL bin directory for the private server (default: the
                        binaries bundled with popflow)
  POPFLOW_REGISTRY      registry (JSON) of operation types run as local processes or
                        Kubernetes pods (docs/runners.md)
  POPFLOW_KUBERNETES_NAMESPACE, POPFLOW_KUBECONFIG
                        where pods run (default: namespace default, in-cluster account)
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
    _add_serve(commands)
    _add_worker(commands)
    _add_queues(commands)
    _add_history(commands)
    _add_progress(commands)
    _add_db(commands)
    _add_projections(commands)
    _add_token(commands)
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


def _add_serve(commands: Commands) -> None:
    serve = _command(
        commands,
        "serve",
        serve_command,
        "serve the HTTP API (POP resources, services, event feed) with a worker and the "
        "timed processes, until Ctrl-C or SIGTERM",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=_port, default=8080, help="TCP port (default 8080; 0: any free port)"
    )
    serve.add_argument(
        "--no-worker", action="store_true", help="serve only: claim no agendas in this process"
    )
    serve.add_argument(
        "--insight",
        action="append",
        metavar="ID",
        help="the worker claims agendas of this insight only (repeatable; default: every "
        "insight). Leave the insights that external executors serve to them",
    )
    auth = serve.add_argument_group("authentication (a Bearer token on every request)")
    auth.add_argument(
        "--tokens-file",
        type=Path,
        metavar="FILE",
        help="tokens file (default: tokens.json in the home, as `popflow token create` writes)",
    )
    auth.add_argument(
        "--jwt-secret-file",
        type=Path,
        metavar="FILE",
        help="accept HS256 JWTs signed with this secret",
    )
    auth.add_argument(
        "--jwt-public-key", type=Path, metavar="FILE", help="accept RS256 JWTs (PEM public key)"
    )
    auth.add_argument(
        "--jwt-accounts-claim",
        default="accounts",
        metavar="CLAIM",
        help="JWT claim listing the caller's accounts (default accounts)",
    )
    auth.add_argument("--jwt-audience", metavar="AUD", help="required JWT audience")
    auth.add_argument("--jwt-issuer", metavar="ISS", help="required JWT issuer")
    auth.add_argument(
        "--insecure",
        action="store_true",
        help="accept requests without a token as an anonymous superuser (local use only)",
    )
    serve.add_argument(
        "--grace",
        type=_seconds,
        metavar="SECONDS",
        help="on Ctrl-C or SIGTERM, how long running operations may take to finish (default 10)",
    )


def _add_worker(commands: Commands) -> None:
    defaults = WorkerSettings()
    worker = _command(
        commands,
        "worker",
        worker_command,
        "claim and run agendas from the database (no API) until Ctrl-C or SIGTERM; run any "
        "number of workers against one database",
    )
    worker.add_argument(
        "--resource-pool",
        type=_non_blank,
        metavar="ID",
        help="claim only agendas routed to this resource pool (default: any)",
    )
    worker.add_argument(
        "--insight",
        action="append",
        type=_non_blank,
        metavar="ID",
        help="claim only agendas of this insight (repeatable; default: every insight)",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_count,
        default=defaults.max_agendas,
        metavar="N",
        help=f"agendas executed at once (default {defaults.max_agendas})",
    )
    worker.add_argument(
        "--lease-timeout",
        type=_positive_seconds,
        default=defaults.lease_timeout,
        metavar="SECONDS",
        help="a worker silent for this long loses its agendas to the others (default "
        f"{defaults.lease_timeout:g}; give every worker the same value: each one's reclaimer "
        "judges all of them by its own); it heartbeats every min(2, SECONDS / 5) s",
    )
    worker.add_argument(
        "--grace",
        type=_seconds,
        default=defaults.shutdown_grace,
        metavar="SECONDS",
        help="on Ctrl-C or SIGTERM, how long agendas in flight may take to finish before "
        f"they are handed back (default {defaults.shutdown_grace:g})",
    )


def _add_queues(commands: Commands) -> None:
    queues = _command(
        commands,
        "queues",
        queues_command,
        "print each insight's queue: its algorithm and size, agendas ready, dispatched and "
        "running, and how long the oldest has waited",
    )
    queues.add_argument(
        "--insight",
        action="append",
        type=_non_blank,
        metavar="ID",
        help="show this insight, even with nothing queued (repeatable; default: every "
        "insight defined or with something queued)",
    )
    queues.add_argument("--json", action="store_true", help="print a JSON list of objects")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 0 to 65535, got {text!r}")
    return value


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


def _add_token(commands: Commands) -> None:
    token = commands.add_parser("token", help="bearer tokens for the HTTP API")
    actions = token.add_subparsers(title="commands", metavar="COMMAND", required=True)
    create = _command(
        actions,
        "create",
        create_token_command,
        "create a bearer token for the HTTP API, add it to the tokens file and print it "
        "(only the token, on stdout)",
    )
    create.add_argument(
        "--user", required=True, type=_non_blank, metavar="ID", help="the user the token names"
    )
    create.add_argument(
        "--account",
        action="append",
        default=[],
        type=_non_blank,
        metavar="ACCOUNT",
        help="a customer id the token acts for (repeat for several; required unless --superuser)",
    )
    create.add_argument(
        "--superuser", action="store_true", help="the token sees and changes everything"
    )
    create.add_argument(
        "--tokens-file",
        type=Path,
        metavar="FILE",
        help="the tokens file to add to (default: tokens.json in the home directory)",
    )


def _non_blank(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty value")
    return text


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


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an event number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"versions start at 1, got {value}")
    return value
