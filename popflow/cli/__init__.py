"""The ``popflow`` command line: run an agenda here, serve the API, read histories, administer
the database.

``popflow = "popflow.cli:main"`` is the console script (``python -m popflow`` is the same).
:func:`main` parses the arguments (:mod:`~popflow.cli.parser`), builds the settings and the
console once (:mod:`~popflow.cli.context`, the only reader of the environment), and runs
the chosen command's coroutine in a fresh event loop. The commands live one per module:

=====================  ======================================  ============================
command                module                                  opens
=====================  ======================================  ============================
run FILE               :mod:`~popflow.cli.run`                 an engine (claims nothing)
serve                  :mod:`~popflow.cli.serve`               an engine and the HTTP API
worker                 :mod:`~popflow.cli.worker`              an engine that claims, no API
queues                 :mod:`~popflow.cli.queues`              the storage only
token create           :mod:`~popflow.cli.token`               the tokens file only
history AGENDA_ID      :mod:`~popflow.cli.history`             the storage only
progress AGENDA_ID     :mod:`~popflow.cli.progress`            the storage only
db migrate             :mod:`~popflow.cli.admin`               a connection
projections rebuild    :mod:`~popflow.cli.admin`               the storage only
=====================  ======================================  ============================

Whatever happens, :func:`main` returns an exit status (documented in ``popflow --help``
and :mod:`~popflow.cli.errors`) after one clear message on stderr, without a traceback
unless ``-v`` asks for one; nothing runs once the command's event loop has ended.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence

import anyio

from popflow.cli.console import configure_logging
from popflow.cli.context import Context, context_from
from popflow.cli.errors import report
from popflow.cli.parser import build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):  # never die on an unencodable agenda name
            stream.reconfigure(errors="backslashreplace")
    context = context_from(args, os.environ, sys.stdout, sys.stderr)
    configure_logging(context.verbosity, context.console)
    return execute(context, args)


def execute(context: Context, args: argparse.Namespace) -> int:
    """Run the parsed command; every error becomes a message and an exit status."""
    try:
        return int(anyio.run(args.handler, context, args))
    # The last resort: whatever escapes a command becomes a message and an exit status.
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as error:  # noqa: BLE001
        return report(error, context.console, verbose=context.verbosity > 0)
