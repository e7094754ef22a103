"""Administration: ``popflow db migrate`` and ``popflow projections rebuild``.

``db migrate`` applies the schema migrations that the database lacks (numbered SQL files,
each applied once under an advisory lock, see :mod:`popflow.migrations`) and lists them.
Every popflow process migrates when it opens the database anyway; the command exists to
do it deliberately, for instance before starting a fleet of workers.

``projections rebuild`` empties the progress rows and replays the whole event log into
them. The rows are derived data: rebuilding yields exactly what the live projection keeps
(a test compares them), so this is the remedy when the rows are in doubt, and the way to
fill a projection whose shape changed. It reports how many events were replayed.

Both create the private PostgreSQL on first use, like every command that writes.
"""

from __future__ import annotations

import argparse
import time

from popflow.bootstrap import migrate_database, rebuild_projections
from popflow.cli.context import Context, announce_first_run
from popflow.cli.errors import ExitStatus
from popflow.cli.render import duration, plural


async def migrate_command(context: Context, _args: argparse.Namespace) -> int:
    if context.settings.uses_memory:
        context.console.say("nothing to migrate: memory:// keeps no schema")
        return ExitStatus.OK
    announce_first_run(context)
    applied = await migrate_database(context.settings)
    if not applied:
        context.console.say("the schema is up to date")
        return ExitStatus.OK
    context.console.say(f"applied {plural(len(applied), 'migration')}:")
    for name in applied:
        context.console.say(f"  {name}")
    return ExitStatus.OK


async def rebuild_command(context: Context, _args: argparse.Namespace) -> int:
    announce_first_run(context)
    began = time.monotonic()
    replayed = await rebuild_projections(context.settings)
    took = duration(time.monotonic() - began)
    context.console.say(
        f"rebuilt the progress projection from {plural(replayed, 'event')} in {took}"
    )
    return ExitStatus.OK
