"""The in-memory runner's handler call: the handler's own coroutine run as a task, ending
with the operation's outcome (success with resume data, clean and unexpected failures),
cancelled untouched, and supervised by the execution's operation tasks like any runner."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from popflow.adapters.memory import Handler, HandlerContext, HandlerError, MemoryRunner
from popflow.engine.clock import SystemClock
from popflow.engine.operation_tasks import Finished, Message, OperationTasks, Progressed
from popflow.engine.runner import Failed, Invocation, ProgressReport, Succeeded
from popflow.engine.slots import OperationSlots
from popflow.events.vocabulary import Operation


def invocation(payload: Any = None, *, type_: str = "h") -> Invocation:
    return Invocation(
        agenda_id="a-1",
        progress_id="p-1",
        customer_id="acme",
        cid=None,
        operation=Operation(name="op", type=type_),
        payload=payload,
        attempt=1,
    )


async def no_progress(_report: ProgressReport) -> None:
    return None


def task_of(handler: Handler, payload: Any = None) -> asyncio.Task[Any]:
    runner = MemoryRunner({"h": handler})
    return asyncio.get_running_loop().create_task(runner.run(invocation(payload), no_progress))


async def test_the_task_ends_with_the_handlers_result_and_resume_data() -> None:
    async def handler(ctx: HandlerContext) -> Any:
        await anyio.lowlevel.checkpoint()
        ctx.params["JobId"] = "job-1"
        await anyio.lowlevel.checkpoint()
        return {"echo": ctx.payload}

    assert await task_of(handler, {"x": 1}) == Succeeded(
        {"echo": {"x": 1}}, params={"JobId": "job-1"}
    )


async def test_a_handler_without_resume_data_reports_none() -> None:
    async def handler(_ctx: HandlerContext) -> Any:
        return 7

    assert await task_of(handler) == Succeeded(7, params=None)


async def test_a_handler_error_fails_cleanly_with_its_message_payload_and_params() -> None:
    async def handler(ctx: HandlerContext) -> Any:
        await ctx.progress(10, params={"step": 1})
        await anyio.lowlevel.checkpoint()
        raise HandlerError("no such file", payload={"path": "/x"})

    outcome = await task_of(handler)
    assert isinstance(outcome, Failed)
    assert [(d.message, d.payload, d.stack_trace) for d in outcome.diagnostics] == [
        ("no such file", {"path": "/x"}, None)
    ]
    assert outcome.params == {"step": 1}


async def test_an_unexpected_exception_fails_with_pops_message_and_the_stack_trace() -> None:
    async def handler(_ctx: HandlerContext) -> Any:
        await anyio.lowlevel.checkpoint()
        raise ValueError("boom")

    outcome = await task_of(handler)
    assert isinstance(outcome, Failed)
    (diagnostic,) = outcome.diagnostics
    assert diagnostic.message == "Resident execution failed for operation: op: boom"
    assert diagnostic.stack_trace is not None
    assert "ValueError: boom" in diagnostic.stack_trace
    assert "in handler" in diagnostic.stack_trace  # the handler's own frame


async def test_a_handler_that_raises_before_returning_an_awaitable_fails_too() -> None:
    def handler(_ctx: HandlerContext) -> Any:
        raise RuntimeError("not even started")

    outcome = await task_of(handler)
    assert isinstance(outcome, Failed)
    assert outcome.diagnostics[0].message.endswith("op: not even started")


async def test_a_handler_may_return_any_awaitable() -> None:
    def handler(_ctx: HandlerContext) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, "from a future")
        return future

    assert await task_of(handler) == Succeeded("from a future")


async def test_the_call_can_be_awaited_like_any_coroutine() -> None:
    async def handler(_ctx: HandlerContext) -> Any:
        await anyio.lowlevel.checkpoint()
        return "awaited"

    runner = MemoryRunner({"h": handler})
    assert await runner.run(invocation(), no_progress) == Succeeded("awaited")


async def test_an_unknown_type_fails_without_a_handler() -> None:
    outcome = await MemoryRunner({}).run(invocation(type_="nope"), no_progress)
    assert isinstance(outcome, Failed)
    assert outcome.diagnostics[0].message.startswith("Unknown operation type found: nope")


async def test_cancelling_a_blocked_handler_cancels_the_task_and_reaches_the_handler() -> None:
    seen: list[str] = []
    blocked = anyio.Event()

    async def handler(_ctx: HandlerContext) -> Any:
        blocked.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            seen.append("cancelled")
            raise
        return "never"

    task = task_of(handler)
    await blocked.wait()
    coroutine = task.get_coro()
    assert isinstance(coroutine, Coroutine)  # what asyncio and anyio look at in a task
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_SUSPENDED
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert seen == ["cancelled"]


async def test_a_handler_cancelled_before_it_started_never_runs() -> None:
    ran: list[bool] = []

    async def handler(_ctx: HandlerContext) -> Any:
        ran.append(True)

    task = task_of(handler)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ran == []


async def test_operation_tasks_record_outcomes_and_progress_and_stop_blocked_handlers() -> None:
    release = anyio.Event()

    async def quick(ctx: HandlerContext) -> Any:
        await ctx.progress(50, "half")
        return "done"

    async def blocked(_ctx: HandlerContext) -> Any:
        await release.wait()
        return "late"

    runner = MemoryRunner({"quick": quick, "blocked": blocked})
    posted: list[Message] = []
    slots = OperationSlots(2)
    tasks = OperationTasks(
        "a-1", post=posted.append, runner=runner, slots=slots, clock=SystemClock()
    )
    for name in ("quick", "blocked"):
        assert slots.try_acquire()
        operation = Operation(name=name, type=name)
        tasks.start(msgspec.structs.replace(invocation(), operation=operation))
    with anyio.fail_after(2):
        while len(tasks) > 1:
            await anyio.sleep(0.001)
    assert posted == [
        Progressed("quick", 1, ProgressReport(50, "half")),
        Finished("quick", 1, Succeeded("done")),
    ]
    await tasks.stop()  # the blocked handler is cancelled; a stop records no outcome
    assert len(tasks) == 0
    assert len(posted) == 2
    assert slots.free == 2
