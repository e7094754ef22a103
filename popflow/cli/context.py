"""What every command receives: the settings, the console, and the storage it names.

This is the one place in the command line that reads the environment: the ``POPFLOW_*``
variables through :meth:`Settings.from_environment <popflow.settings.Settings.from_environment>`
(``--dsn`` and ``--home`` win over them), and ``NO_COLOR`` for the console.

Storage is chosen as everywhere in popflow: a DSN (``--dsn`` or ``POPFLOW_DSN``), else the
private PostgreSQL under the home directory (``--home`` or ``POPFLOW_HOME``), which is
created on first use; ``memory://`` keeps everything inside the process. Two rules make the
embedded default pleasant from a terminal:

* a command that will *create* the private server says so first, because ``initdb`` takes
  a few seconds and leaves a directory behind (:func:`announce_first_run`);
* a command that only *reads* never creates it: with no server under the home there is no
  agenda to find (:func:`require_database`).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from popflow.cli.console import Console
from popflow.embedded import data_directory
from popflow.errors import NotFound
from popflow.settings import Settings, redacted


@dataclasses.dataclass(frozen=True)
class Context:
    settings: Settings
    console: Console
    verbosity: int = 0
    storage_options: tuple[str, ...] = ()
    """The options that chose the storage, repeated in the commands we suggest."""

    def suggest(self, *words: str) -> str:
        """A popflow command line that reaches the same storage as this one."""
        return shlex.join(["popflow", *words, *self.storage_options])


def context_from(
    args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, err: TextIO
) -> Context:
    dsn: str | None = getattr(args, "dsn", None)
    home: Path | None = getattr(args, "home", None)
    settings = Settings.from_environment(environ, dsn=dsn, home=home)
    options: list[str] = ["--dsn", redacted(dsn)] if dsn else []
    if home is not None and settings.uses_embedded:
        options += ["--home", str(home)]
    return Context(
        settings=settings,
        console=Console.for_streams(out, err, no_colour=bool(environ.get("NO_COLOR"))),
        verbosity=getattr(args, "verbose", 0),
        storage_options=tuple(options),
    )


def embedded_data_dir(settings: Settings) -> Path | None:
    """Where the private server keeps its cluster; None when a DSN is configured."""
    return data_directory(settings.home) if settings.uses_embedded else None


def announce_first_run(context: Context) -> None:
    """Say so on stderr when this command is about to create the private PostgreSQL."""
    data_dir = embedded_data_dir(context.settings)
    if data_dir is not None and not data_dir.exists():
        context.console.note(
            f"creating a private PostgreSQL under {context.settings.home} (first run only)"
        )


def require_database(context: Context, agenda_id: str) -> None:
    """NotFound, without creating anything, when the private PostgreSQL was never set up."""
    data_dir = embedded_data_dir(context.settings)
    if data_dir is not None and not data_dir.exists():
        raise NotFound(
            f"no agenda with id {agenda_id}: nothing has run under {context.settings.home} "
            "yet (set POPFLOW_HOME or --home to the directory `popflow run` used, or --dsn)"
        )
