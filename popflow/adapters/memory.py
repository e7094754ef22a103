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
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from typing import Any

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

    One exists per running operation, so it is kept small: slots, and the resume data and
    the logger adapter made only when a handler uses them."""

    __slots__ = ("_invocation", "_log", "_params", "_report")

    def __init__(self, invocation: Invocation, report: ProgressCallback) -> None:
        self._invocation = invocation
        self._report = report
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        self._params: Params | None = None

    @property
    def params(self) -> Params:
        """Resume data to store on the OperationProgress (merged into its ``params``)."""
        if self._params is None:
            self._params = {}
        return self._params

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

    def run(self, invocation: Invocation, report: ProgressCallback) -> Coroutine[Any, Any, Outcome]:
        """The handler's own coroutine, dressed as one that returns the outcome (see
        :class:`_HandlerCall`)."""
        handler = self._handlers.get(invocation.operation.type)
        if handler is None:
            return self._concluded(unknown_type(invocation, self._clock.now_ms()))
        context = HandlerContext(invocation, report)
        try:
            awaitable = handler(context)
        except Exception as exc:  # noqa: BLE001 - a failing handler fails its operation only
            return self._concluded(self._raised(context, exc))
        if not isinstance(awaitable, Coroutine):
            awaitable = _awaited(awaitable)
        return _HandlerCall(awaitable, context, self)

    @staticmethod
    async def _concluded(outcome: Outcome) -> Outcome:
        return outcome

    def _succeeded(self, context: HandlerContext, result: JSON) -> Succeeded:
        return Succeeded(result, params=context._params or None)

    def _raised(self, context: HandlerContext, exc: Exception) -> Failed:
        """The outcome of a handler that raised ``exc``."""
        params = context._params or None
        if isinstance(exc, HandlerError):
            event = diagnostic(exc.message, self._clock.now_ms(), payload=exc.payload)
            return Failed([event], params=params)
        name = context.operation.name
        message = f"Resident execution failed for operation: {name}: {exc}"
        return Failed([diagnostic(message, self._clock.now_ms(), error=exc)], params=params)


async def _awaited(awaitable: Awaitable[JSON]) -> JSON:
    return await awaitable


class _HandlerCall(Coroutine[Any, Any, Outcome]):
    """A handler's coroutine that ends with the operation's outcome instead of the handler's
    result or exception.

    A worker holds one running operation per in-flight handler, often tens of thousands:
    the task of each runs the handler's coroutine through this small object rather than
    through a wrapping ``async def``, whose suspended frame would cost several times as
    much. Every step is passed to the handler's coroutine as is; when it returns or raises
    an :class:`Exception`, the call returns the outcome instead. A cancellation, and any
    ``BaseException`` that is not an ``Exception``, goes through untouched.
    """

    __slots__ = ("_context", "_coroutine", "_runner")

    def __init__(
        self, coroutine: Coroutine[Any, Any, JSON], context: HandlerContext, runner: MemoryRunner
    ) -> None:
        self._coroutine = coroutine
        self._context = context
        self._runner = runner

    def send(self, value: Any) -> Any:
        try:
            return self._coroutine.send(value)
        except Exception as exc:  # noqa: BLE001 - a failing handler fails its operation only
            raise StopIteration(self._outcome(exc)) from None

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        try:
            if val is None and tb is None:
                return self._coroutine.throw(typ)
            return self._coroutine.throw(typ, val, tb)  # pragma: no cover - the old form
        except Exception as exc:  # noqa: BLE001 - a failing handler fails its operation only
            raise StopIteration(self._outcome(exc)) from None

    def _outcome(self, ended: Exception) -> Outcome:
        """What the handler's coroutine ending with ``ended`` (its return, as
        ``StopIteration``, or what it raised) makes of the operation."""
        if isinstance(ended, StopIteration):
            return self._runner._succeeded(self._context, ended.value)
        return self._runner._raised(self._context, ended)

    def close(self) -> None:
        self._coroutine.close()

    def __await__(self) -> Generator[Any, None, Outcome]:
        return self  # type: ignore[return-value]  # an iterator with send and throw

    def __next__(self) -> Any:
        return self.send(None)

    # What debuggers and task introspection (inspect.getcoroutinestate) read.
    @property
    def cr_frame(self) -> Any:
        return getattr(self._coroutine, "cr_frame", None)

    @property
    def cr_running(self) -> bool:
        return bool(getattr(self._coroutine, "cr_running", False))

    @property
    def cr_suspended(self) -> bool:
        return bool(getattr(self._coroutine, "cr_suspended", False))

    @property
    def cr_await(self) -> Any:
        return getattr(self._coroutine, "cr_await", None)
