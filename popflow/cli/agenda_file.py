"""Reading an agenda file, and rejecting a bad one before anything is opened.

``popflow run FILE`` checks the file completely *before* it opens the engine, so that a
mistake costs no database connection, writes nothing and, with the embedded default, does
not even start (or create) the private PostgreSQL. The checks are the engine's own:

1. the file is read (missing, a directory, unreadable: one line saying so);
2. :func:`~popflow.engine.agenda.parse_agenda` decodes it strictly, within the configured
   size limit (too large, not JSON with the line and column, not an object, an unknown or
   mistyped field);
3. :func:`~popflow.engine.validation.check_agenda` validates it against the handlers that
   ``popflow run`` has, the built-in ones (names, duplicates, references, cycles, types).

Every failure raises :class:`AgendaFileError`, a :class:`~popflow.errors.CallerError`
whose message names the file and lists every problem, one per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from popflow.adapters.handlers import BUILTIN_HANDLERS
from popflow.engine.agenda import check_size, parse_agenda
from popflow.engine.validation import check_agenda
from popflow.errors import CallerError, InvalidAgenda
from popflow.events.vocabulary import Agenda
from popflow.settings import Settings


class AgendaFileError(CallerError):
    """The agenda file cannot be read, or does not hold a valid agenda."""


def load_agenda(path: Path, settings: Settings) -> Agenda:
    """The valid agenda in ``path``, or AgendaFileError saying everything wrong with it."""
    try:
        check_size(_size(path), max_bytes=settings.max_agenda_bytes)
        agenda = parse_agenda(_read(path), max_bytes=settings.max_agenda_bytes)
        check_agenda(
            agenda,
            known_type=frozenset(BUILTIN_HANDLERS).__contains__,
            max_operations=settings.max_operations,
        )
    except InvalidAgenda as exc:
        raise AgendaFileError(invalid_message(path, exc.problems)) from exc
    return agenda


def invalid_message(path: Path, problems: Sequence[str]) -> str:
    """``FILE is not a valid agenda: problem``, or one problem per line after it."""
    if len(problems) == 1:
        return f"{path} is not a valid agenda: {problems[0]}"
    return f"{path} is not a valid agenda:\n" + "\n".join(f"  - {p}" for p in problems)


def _size(path: Path) -> int:
    """The file's size, so that an oversized file is refused without reading it."""
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reading it says what is wrong


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AgendaFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AgendaFileError(f"{path} is a directory, not an agenda file") from None
    except PermissionError:
        raise AgendaFileError(f"{path}: permission denied") from None
    except OSError as exc:
        raise AgendaFileError(f"cannot read {path}: {exc.strerror or exc}") from None
