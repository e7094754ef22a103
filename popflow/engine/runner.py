"""The operation runner port: the one thing the executor knows about running operations.

Given an :class:`Invocation` (the operation, its payload with references resolved, the
progress of its previous attempt when there was one, and who it runs for) and a progress
callback, a runner produces an :data:`Outcome`. In-process Python handlers, local
processes and Kubernetes pods all sit behind this port; the executor never knows which
one it drives.

An operation that fails is an outcome (:class:`Failed`), not an exception. A runner
raises only when it is cancelled, and the executor turns any other escaping exception into
a failure of that operation, never of the worker.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec

from popflow.events.vocabulary import JSON, DiagnosticEvent, Operation, Params


class Invocation(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a runner is told about one attempt of one operation."""

    agenda_id: str
    progress_id: str
    customer_id: str
    cid: str | None
    operation: Operation
    payload: JSON
    attempt: int
    prior_progress: dict[str, Any] | None = None
    """The OperationProgress (POP JSON) of the previous attempt, as ``LAST_PROGRESS``."""


class Succeeded(msgspec.Struct, frozen=True):
    result: JSON = None
    params: Params | None = None


class Failed(msgspec.Struct, frozen=True):
    diagnostics: Sequence[DiagnosticEvent]
    params: Params | None = None


Outcome = Succeeded | Failed


class ProgressReport(msgspec.Struct, frozen=True):
    """A running operation's news: percent done, a message, resume data for a retry."""

    percent_complete: float | None = None
    message: str | None = None
    params: Params | None = None


ProgressCallback = Callable[[ProgressReport], Awaitable[None]]


class OperationRunner(Protocol):
    """Runs operations of the types it knows."""

    def knows(self, operation_type: str) -> bool:
        """Whether operations of this type can run here (checked at submission)."""
        ...

    def known_types(self) -> Sequence[str]:
        """Every type this runner knows, for error messages."""
        ...

    async def run(self, invocation: Invocation, report: ProgressCallback) -> Outcome:
        """Run one attempt to its outcome."""
        ...


def unknown_type(invocation: Invocation, now_ms: int) -> Failed:
    """The outcome of an operation whose type no runner knows (POP's message)."""
    operation = invocation.operation
    message = f"Unknown operation type found: {operation.type} on operation: {operation.name}"
    return Failed([diagnostic(message, now_ms)])


def diagnostic(
    message: str, now_ms: int, *, error: BaseException | None = None, payload: JSON = None
) -> DiagnosticEvent:
    """A POP DiagnosticEvent, with the stack trace of ``error`` when one is given."""
    trace = "".join(traceback.format_exception(error)) if error is not None else None
    return DiagnosticEvent(message=message, time=now_ms, stack_trace=trace, payload=payload)
