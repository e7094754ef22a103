"""The terminal: where each kind of output goes, and how it looks there.

The command line writes to two streams with different audiences:

* **stdout** carries the result of the command (live progress of ``run``, a timeline, a
  progress table, or JSON with ``--json``), so that it can be piped and parsed;
* **stderr** carries everything about the *process*: notes (``popflow: creating a private
  PostgreSQL ...``), errors, and log records, in particular the handlers' own log lines
  (loggers ``popflow.handlers.*``), which show what ``logMessages`` or ``sample`` print.

Colour and symbols are used only when stdout is a terminal (and ``NO_COLOR`` is unset, see
https://no-color.org); piped output is plain text, identical from run to run apart from
ids and times. Every line is flushed at once, so ``popflow run x.json | tee log`` is live.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from typing import Final, TextIO

_ANSI: Final = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "cyan": "36",
}

HANDLER_LOGGERS: Final = "popflow.handlers"
_HANDLER_NAME: Final = "popflow-cli"


@dataclasses.dataclass(frozen=True)
class Console:
    """The two output streams and whether stdout may be decorated."""

    out: TextIO
    err: TextIO
    colour: bool = False
    width: int = 120
    """Columns available on stdout (the terminal's width, else 120)."""

    @classmethod
    def for_streams(cls, out: TextIO, err: TextIO, *, no_colour: bool) -> Console:
        colour = out.isatty() and not no_colour
        return cls(out, err, colour=colour, width=shutil.get_terminal_size((120, 24)).columns)

    def say(self, text: str = "") -> None:
        """One line of the command's result on stdout."""
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """One line about the process on stderr, prefixed with the program's name."""
        self.err.write(f"popflow: {text}\n")
        self.err.flush()

    def paint(self, text: str, *styles: str) -> str:
        """``text`` in the given styles (names of :data:`_ANSI`) when colour is on."""
        if not self.colour or not styles:
            return text
        codes = ";".join(_ANSI[style] for style in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


class _CliFormatter(logging.Formatter):
    """Handler lines as ``[operation] message``; other records name their level and logger."""

    def __init__(self, *, detailed: bool) -> None:
        super().__init__()
        self._detailed = detailed

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and self._detailed:
            message += "\n" + self.formatException(record.exc_info)
        operation = getattr(record, "operation", None)
        if record.name.startswith(HANDLER_LOGGERS) and operation is not None:
            return f"[{operation}] {message}"
        if self._detailed:
            return f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"
        return f"popflow: {record.levelname.lower()}: {message}"


def configure_logging(verbosity: int, console: Console) -> None:
    """Handler lines always; popflow's warnings by default, INFO with ``-v``, DEBUG ``-vv``."""
    handler = logging.StreamHandler(console.err)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(_CliFormatter(detailed=verbosity > 0))
    popflow = logging.getLogger("popflow")
    # Replace, not add: main() may run twice in one process (tests, embedding).
    for old in [h for h in popflow.handlers if h.get_name() == _HANDLER_NAME]:
        popflow.removeHandler(old)
    popflow.addHandler(handler)
    popflow.propagate = False
    levels = {0: logging.WARNING, 1: logging.INFO}
    popflow.setLevel(levels.get(verbosity, logging.DEBUG))
    handlers_level = logging.DEBUG if verbosity > 1 else logging.INFO
    logging.getLogger(HANDLER_LOGGERS).setLevel(handlers_level)
