"""The exceptions popflow raises, as one small tree.

::

    PopflowError
    ├── CallerError              the request is wrong; retrying it unchanged cannot help
    │   ├── InvalidAgenda        every problem found in a submitted agenda, together
    │   ├── InvalidRequest       a request failed validation (a field is missing or wrong)
    │   ├── NotFound             no such agenda (or stream, or version, or object)
    │   ├── InvalidTransition    the command does not apply in the agenda's current state
    │   ├── AlreadyExists        an object with that id exists already
    │   ├── Unauthenticated      no credentials, or credentials that do not check out
    │   └── Forbidden            the caller is known but may not do this
    ├── ConcurrencyConflict      another writer appended first; re-read and decide again
    └── InfrastructureError      PostgreSQL or the embedded server misbehaved; retry later
        └── EmbeddedServerError  the private PostgreSQL could not be set up or started

Whether to retry is carried as data (:attr:`PopflowError.retryable`), so callers never
need to enumerate classes. Operation failures are *not* exceptions: they are outcomes
recorded in the agenda's history.
"""

from __future__ import annotations

from collections.abc import Sequence


class PopflowError(Exception):
    """Base of every error popflow raises on purpose."""

    retryable: bool = False


class CallerError(PopflowError):
    """The caller's request is wrong; the message says what to change."""


class InvalidAgenda(CallerError):
    """A submitted agenda failed validation. ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        heading = "1 problem" if count == 1 else f"{count} problems"
        super().__init__(f"invalid agenda ({heading}):\n" + "\n".join(f"  - {p}" for p in problems))


class InvalidRequest(CallerError):
    """A request failed validation; ``problems`` lists every problem, down to the field."""

    def __init__(self, problems: Sequence[str] | str) -> None:
        self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("; ".join(self.problems))


class AlreadyExists(CallerError):
    """An object with the requested id exists already."""


class Unauthenticated(CallerError):
    """The request carries no credentials, or credentials that do not check out."""


class Forbidden(CallerError):
    """The caller is authenticated but may not read or change this object."""


class NotFound(CallerError):
    """The named object does not exist."""


class InvalidTransition(CallerError):
    """The command does not apply to the agenda in its current state."""


class ConcurrencyConflict(PopflowError):
    """A stale writer: the stream moved past the version the append expected."""

    retryable = True

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, the append expected {expected}"
        )


class InfrastructureError(PopflowError):
    """The database (or another dependency) failed; the same request may succeed later."""

    retryable = True


class EmbeddedServerError(InfrastructureError):
    """The private PostgreSQL server could not be prepared or started."""
