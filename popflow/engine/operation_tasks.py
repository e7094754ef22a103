"""The running operations of one agenda execution, and the messages they send it.

Each running operation is the runner's coroutine in a plain :mod:`asyncio` task, not a
task of an anyio task group: a worker runs one per in-flight operation, and a blocked
anyio task costs about four times the memory of an asyncio one (its own cancel scope,
task state and event) and noticeably more CPU to start. popflow runs on asyncio only
(asyncpg requires it), so no portability is lost. What a task group guarantees still
holds, kept here by hand:

* nothing outlives its execution: :meth:`OperationTasks.stop` cancels every task still
  running and waits, shielded, until all have ended; the execution calls it on every way
  out, so cancelling the execution's scope cancels its operations too;
* nothing is lost: a task that ends is turned into a message (its outcome; an exception
  becomes a failed outcome, as a failing operation is an outcome, not a crash; a cancel
  that did not come from the execution fails the operation too), except a
  ``BaseException`` that is not an ``Exception``, which is handed to the execution to
  raise (:class:`Crashed`).

A task releases its worker-wide slot when it ends, whichever way.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
from collections.abc import Callable

import anyio

from popflow.engine.clock import Clock
from popflow.engine.runner import (
    Failed,
    Invocation,
    OperationRunner,
    Outcome,
    ProgressReport,
    diagnostic,
)
from popflow.engine.slots import OperationSlots

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Finished:
    name: str
    attempt: int
    outcome: Outcome


@dataclasses.dataclass(frozen=True, slots=True)
class Progressed:
    name: str
    attempt: int
    report: ProgressReport


@dataclasses.dataclass(frozen=True, slots=True)
class SlotGranted:
    """A worker-wide slot was handed to the execution."""


@dataclasses.dataclass(frozen=True, slots=True)
class Crashed:
    """An operation's task died of a ``BaseException`` that is not an ``Exception``."""

    error: BaseException


Message = Finished | Progressed | SlotGranted | Crashed
Post = Callable[[Message], None]


class _Attempt:
    """One running attempt: its name and number, and its progress callback."""

    __slots__ = ("attempt", "name", "post")

    def __init__(self, name: str, attempt: int, post: Post) -> None:
        self.name = name
        self.attempt = attempt
        self.post = post

    async def __call__(self, report: ProgressReport) -> None:
        self.post(Progressed(self.name, self.attempt, report))


class OperationTasks:
    """Starts operations through the runner and posts what becomes of them."""

    __slots__ = (
        "_agenda_id",
        "_callback_context",
        "_clock",
        "_ended_callback",
        "_post",
        "_runner",
        "_slots",
        "_stopping",
        "_tasks",
    )

    def __init__(
        self,
        agenda_id: str,
        *,
        post: Post,
        runner: OperationRunner,
        slots: OperationSlots,
        clock: Clock,
    ) -> None:
        self._agenda_id = agenda_id
        self._post = post
        self._runner = runner
        self._slots = slots
        self._clock = clock
        self._tasks: dict[asyncio.Task[Outcome], _Attempt] = {}
        self._stopping = False
        # One bound method and one context for the end of every task, rather than a new
        # pair per task (``add_done_callback`` copies the current context unless given one):
        # :meth:`_ended` reads no context variable.
        self._ended_callback = self._ended
        self._callback_context = contextvars.copy_context()

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, invocation: Invocation) -> None:
        """Run one attempt; it holds a slot of ``slots``, released when it ends."""
        name = invocation.operation.name
        attempt = _Attempt(name, invocation.attempt, self._post)
        coroutine = self._runner.run(invocation, attempt)
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks[task] = attempt
        task.add_done_callback(self._ended_callback, context=self._callback_context)

    async def stop(self) -> None:
        """Cancel the attempts still running and wait until every one has ended."""
        if not self._tasks:
            return
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait(tasks)

    def _ended(self, task: asyncio.Task[Outcome]) -> None:
        attempt = self._tasks.pop(task)
        self._slots.release()
        if task.cancelled():
            if not self._stopping:
                message = f"Operation {attempt.name} was cancelled while it ran"
                outcome: Outcome = Failed([diagnostic(message, self._clock.now_ms())])
                self._post(Finished(attempt.name, attempt.attempt, outcome))
            return
        error = task.exception()
        if error is None:
            self._post(Finished(attempt.name, attempt.attempt, task.result()))
        elif isinstance(error, Exception):
            self._post(Finished(attempt.name, attempt.attempt, self._raised(attempt, error)))
        else:
            self._post(Crashed(error))

    def _raised(self, attempt: _Attempt, error: Exception) -> Failed:
        log.error("operation %s of agenda %s raised", attempt.name, self._agenda_id, exc_info=error)
        message = f"Failed to execute operation: {attempt.name}"
        return Failed([diagnostic(message, self._clock.now_ms(), error=error)])
