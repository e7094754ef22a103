"""The in-memory runner: operations run as async Python functions in the worker's process.

Register a handler per operation type; the runner calls it with a :class:`HandlerContext`
holding the resolved payload, the operation, the agenda's correlation fields and the
previous attempt's progress (``prior_progress``, POP's ``LAST_PROGRESS``), and a
:meth:`HandlerContext.progress` method to report percent done, a message and resume data.
What the handler returns is the operation's output (``<name>.out`` for later operations).

A handler fails by raising. :class:`HandlerError` fails cleanly with its message (and an
optional payload); any other exception fails the operation with
``Resident execution failed for operation: <name>`` and the stack trace, as POP's resident
handlers did. Either way the worker carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio

from popflow.engine.clock import Clock, SystemClock
from popflow.engine.runner import (
    Failed,
    Invocation,
    Outcome,
    ProgressCallback,
    ProgressReport,
    Succeeded,
    diagnostic,
    unknown_type,
)
from popflow.events.vocabulary import JSON, Operation, Params


class HandlerError(Exception):
    """Raised by a handler to fail its operation with a clear message."""

    def __init__(
        self, message: str, *, payload: JSON = None, status_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.payload = payload
        self.status_code = status_code


class HandlerContext:
    """What a handler gets: its input, who it runs for, and a way to report progress.

    One exists per running operation, so it is kept small: slots, and the logger adapter
    made only when a handler logs."""

    __slots__ = ("_invocation", "_log", "_report", "params")

    def __init__(self, invocation: Invocation, report: ProgressCallback) -> None:
        self._invocation = invocation
        self._report = report
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        self.params: Params = {}
        """Resume data to store on the OperationProgress (merged into its ``params``)."""

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger named for the operation type, carrying the agenda and operation."""
        if self._log is None:
            invocation = self._invocation
            self._log = logging.LoggerAdapter(
                logging.getLogger(f"popflow.handlers.{invocation.operation.type}"),
                {"agenda_id": invocation.agenda_id, "operation": invocation.operation.name},
            )
        return self._log

    @property
    def payload(self) -> JSON:
        """The operation's payload with every reference resolved."""
        return self._invocation.payload

    @property
    def operation(self) -> Operation:
        return self._invocation.operation

    @property
    def agenda_id(self) -> str:
        return self._invocation.agenda_id

    @property
    def progress_id(self) -> str:
        return self._invocation.progress_id

    @property
    def customer_id(self) -> str:
        return self._invocation.customer_id

    @property
    def cid(self) -> str | None:
        return self._invocation.cid

    @property
    def attempt(self) -> int:
        return self._invocation.attempt

    @property
    def prior_progress(self) -> Mapping[str, Any] | None:
        """The previous attempt's OperationProgress (``LAST_PROGRESS``), if there was one."""
        return self._invocation.prior_progress

    async def progress(
        self, percent: float | None = None, message: str | None = None, params: Params | None = None
    ) -> None:
        """Report progress; ``params`` are kept as resume data for a later attempt."""
        if params:
            self.params.update(params)
        await self._report(ProgressReport(percent, message, params))


Handler = Callable[[HandlerContext], Awaitable[JSON]]


class MemoryRunner:
    """Runs operations whose type has a registered handler."""

    def __init__(
        self, handlers: Mapping[str, Handler] | None = None, *, clock: Clock | None = None
    ) -> None:
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._clock = clock or SystemClock()

    def register(self, operation_type: str, handler: Handler) -> None:
        self._handlers[operation_type] = handler

    def knows(self, operation_type: str) -> bool:
        return operation_type in self._handlers

    def known_types(self) -> Sequence[str]:
        return sorted(self._handlers)

    async def run(self, invocation: Invocation, report: ProgressCallback) -> Outcome:
        name = invocation.operation.name
        handler = self._handlers.get(invocation.operation.type)
        if handler is None:
            return unknown_type(invocation, self._clock.now_ms())
        context = HandlerContext(invocation, report)
        try:
            result = await handler(context)
        except anyio.get_cancelled_exc_class():
            raise
        except HandlerError as exc:
            event = diagnostic(exc.message, self._clock.now_ms(), payload=exc.payload)
            return Failed([event], params=context.params or None)
        except Exception as exc:  # noqa: BLE001 - a failing handler fails its operation only
            message = f"Resident execution failed for operation: {name}: {exc}"
            return Failed(
                [diagnostic(message, self._clock.now_ms(), error=exc)],
                params=context.params or None,
            )
        return Succeeded(result, params=context.params or None)
