"""The running operations of an execution as plain asyncio tasks: what becomes of each
(outcome, exception, foreign cancel, crash), their slots, and that stopping leaves none
running."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio
import pytest

from popflow.engine.clock import SystemClock
from popflow.engine.operation_tasks import (
    Crashed,
    Finished,
    Message,
    OperationTasks,
    Progressed,
)
from popflow.engine.runner import (
    Failed,
    Invocation,
    Outcome,
    ProgressCallback,
    ProgressReport,
    Succeeded,
)
from popflow.engine.slots import OperationSlots
from popflow.events.vocabulary import Operation

Behaviour = Callable[[ProgressCallback], Awaitable[Outcome]]


class Boom(BaseException):
    """Neither an outcome nor a cancel: must reach the execution."""


class ScriptedRunner:
    """Runs each operation by the behaviour registered under its name."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours

    def knows(self, operation_type: str) -> bool:  # noqa: ARG002 - the port's signature
        return True

    def known_types(self) -> Sequence[str]:
        return []

    async def run(self, invocation: Invocation, report: ProgressCallback) -> Outcome:
        return await self.behaviours[invocation.operation.name](report)


def invocation(name: str, attempt: int = 1) -> Invocation:
    return Invocation(
        agenda_id="a-1",
        progress_id="p-1",
        customer_id="acme",
        cid=None,
        operation=Operation(name=name, type="scripted"),
        payload=None,
        attempt=attempt,
    )


def tasks_for(
    runner: ScriptedRunner, slots: OperationSlots
) -> tuple[OperationTasks, list[Message]]:
    posted: list[Message] = []
    tasks = OperationTasks(
        "a-1", post=posted.append, runner=runner, slots=slots, clock=SystemClock()
    )
    return tasks, posted


async def _settle(tasks: OperationTasks) -> None:
    with anyio.fail_after(2):
        while len(tasks):
            await anyio.sleep(0.001)


async def test_outcomes_progress_and_exceptions_become_messages_and_free_their_slots() -> None:
    async def succeed(report: ProgressCallback) -> Outcome:
        await report(ProgressReport(50, "half"))
        return Succeeded({"ok": True})

    async def raise_error(_report: ProgressCallback) -> Outcome:
        raise RuntimeError("broken handler")

    slots = OperationSlots(2)
    assert slots.try_acquire()
    assert slots.try_acquire()
    tasks, posted = tasks_for(ScriptedRunner({"ok": succeed, "bad": raise_error}), slots)
    tasks.start(invocation("ok", attempt=2))
    tasks.start(invocation("bad"))
    await _settle(tasks)

    assert Progressed("ok", 2, ProgressReport(50, "half")) in posted
    assert Finished("ok", 2, Succeeded({"ok": True})) in posted
    [failed] = [m for m in posted if isinstance(m, Finished) and m.name == "bad"]
    assert isinstance(failed.outcome, Failed)
    assert failed.outcome.diagnostics[0].message == "Failed to execute operation: bad"
    assert "broken handler" in (failed.outcome.diagnostics[0].stack_trace or "")
    assert slots.try_acquire()
    assert slots.try_acquire()  # both slots came back


async def test_a_cancel_from_elsewhere_fails_the_operation() -> None:
    async def cancelled(_report: ProgressCallback) -> Outcome:
        raise anyio.get_cancelled_exc_class()

    slots = OperationSlots(1)
    assert slots.try_acquire()
    tasks, posted = tasks_for(ScriptedRunner({"c": cancelled}), slots)
    tasks.start(invocation("c"))
    await _settle(tasks)

    [finished] = posted
    assert isinstance(finished, Finished)
    assert isinstance(finished.outcome, Failed)
    assert "was cancelled" in finished.outcome.diagnostics[0].message
    assert slots.try_acquire()


async def test_a_base_exception_is_handed_to_the_execution() -> None:
    async def crash(_report: ProgressCallback) -> Outcome:
        raise Boom

    slots = OperationSlots(1)
    assert slots.try_acquire()
    tasks, posted = tasks_for(ScriptedRunner({"x": crash}), slots)
    tasks.start(invocation("x"))
    await _settle(tasks)

    [crashed] = posted
    assert isinstance(crashed, Crashed)
    assert isinstance(crashed.error, Boom)
    assert slots.try_acquire()


async def test_stop_cancels_what_runs_and_waits_for_it_even_when_cancelled() -> None:
    stopped: list[str] = []

    async def block(_report: ProgressCallback) -> Outcome:
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)  # cleanup that takes a while
            stopped.append("block")
        raise AssertionError("unreachable")  # pragma: no cover

    slots = OperationSlots(2)
    assert slots.try_acquire()
    assert slots.try_acquire()
    tasks, posted = tasks_for(ScriptedRunner({"b1": block, "b2": block}), slots)
    with anyio.CancelScope() as outer:
        tasks.start(invocation("b1"))
        tasks.start(invocation("b2"))
        await anyio.sleep(0.01)
        outer.cancel()  # the caller is cancelled too: stop still waits, shielded
        await tasks.stop()
    assert stopped == ["block", "block"]
    assert len(tasks) == 0
    assert posted == []  # our own cancel is no outcome
    assert slots.try_acquire()
    assert slots.try_acquire()


@pytest.mark.parametrize("running", [0, 1])
async def test_stop_with_nothing_or_something_running_returns(running: int) -> None:
    async def block(_report: ProgressCallback) -> Outcome:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    slots = OperationSlots(1)
    tasks, _posted = tasks_for(ScriptedRunner({"b": block}), slots)
    for _ in range(running):
        assert slots.try_acquire()
        tasks.start(invocation("b"))
    with anyio.fail_after(1):
        await tasks.stop()
    assert len(tasks) == 0
