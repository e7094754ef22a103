"""Exit statuses, and how an exception becomes one clear line on stderr.

Every foreseeable failure is one of popflow's own errors (:mod:`popflow.errors`), whose
message already says what went wrong and what to do; the command line prints that message
after ``popflow:`` and exits with the status of its branch of the tree::

    CallerError (InvalidAgenda, NotFound, ...)    2  change the request
    InfrastructureError, ConcurrencyConflict      3  retry later, or fix the setup
    TimeoutError (the database did not answer)    3
    KeyboardInterrupt                           130  (128 + SIGINT)
    anything else                                70  a bug: the traceback is printed

With ``-v`` the traceback is printed for every error, foreseeable or not.

Errors raised inside anyio task groups arrive wrapped in exception groups;
:func:`essential` unwraps them to the error that matters.
"""

from __future__ import annotations

import enum
import traceback

from popflow.cli.console import Console
from popflow.errors import CallerError, PopflowError


class ExitStatus(enum.IntEnum):
    OK = 0
    AGENDA_FAILED = 1
    """``run``: the agenda completed, but failed."""
    CALLER_ERROR = 2
    """Bad usage, an invalid agenda file, an unknown agenda: the request must change."""
    INFRASTRUCTURE = 3
    """The database or the embedded server failed, or ``run --timeout`` elapsed."""
    INTERNAL = 70
    """A bug in popflow (EX_SOFTWARE): the traceback is printed."""
    INTERRUPTED = 130
    """Ctrl-C (128 + SIGINT); SIGTERM gives 143."""


EXIT_STATUS_HELP = """\
exit status:
  0    success (run: the agenda succeeded)
  1    run: the agenda failed
  2    the request is wrong: bad usage, an invalid agenda file, an unknown agenda
  3    infrastructure: PostgreSQL unreachable, the embedded server failed, or
       run --timeout elapsed (the agenda keeps its history)
  70   internal error (a bug in popflow; the traceback is printed)
  130  interrupted by Ctrl-C (run hands the agenda back first); 143 for SIGTERM
"""


def essential(error: BaseException) -> BaseException:
    """The error that matters inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        leaves = [e for e in error.exceptions if isinstance(e, Exception)] or error.exceptions
        popflow_errors = [e for e in leaves if isinstance(essential(e), PopflowError)]
        error = (popflow_errors or leaves)[0]
    return error


def exit_status(error: BaseException) -> ExitStatus:
    if isinstance(error, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(error, CallerError):
        return ExitStatus.CALLER_ERROR
    if isinstance(error, PopflowError | TimeoutError):
        return ExitStatus.INFRASTRUCTURE
    return ExitStatus.INTERNAL


def report(error: BaseException, console: Console, *, verbose: bool) -> ExitStatus:
    """Print ``error`` as popflow's users should see it; return the exit status."""
    error = essential(error)
    status = exit_status(error)
    if verbose or status is ExitStatus.INTERNAL:
        console.err.write("".join(traceback.format_exception(error)))
    console.note(_message(error, status))
    return status


def _message(error: BaseException, status: ExitStatus) -> str:
    if status is ExitStatus.INTERRUPTED:
        return "interrupted"
    if isinstance(error, TimeoutError):
        return "timed out waiting for the database; check that PostgreSQL is healthy, then retry"
    if status is ExitStatus.INTERNAL:
        return f"internal error ({type(error).__name__}: {error}); please report it"
    return str(error)
