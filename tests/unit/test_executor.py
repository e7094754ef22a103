"""The executor and worker on the in-memory adapters: concurrency, bounds, failure,
generators, fencing, shutdown and resume. No IO; real tasks, real timing bounds."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from popflow.adapters.memory import HandlerContext, HandlerError
from popflow.bootstrap import Engine, open_engine, open_storage
from popflow.engine.decide import Reclaim, decide
from popflow.engine.executor import ExecutorSettings
from popflow.engine.worker import WorkerSettings
from popflow.events.store import AppendRequest
from popflow.events.vocabulary import (
    AgendaReclaimed,
    OperationOutcomeIgnored,
    OperationProgressed,
    OperationStarted,
    OperationSucceeded,
    agenda_stream,
)
from popflow.settings import Settings


def settings(**worker: Any) -> Settings:
    executor = worker.pop("executor", ExecutorSettings(progress_interval=0.05))
    return Settings(
        dsn="memory://",
        poll_interval=0.05,
        reclaim_interval=0.05,
        worker=WorkerSettings(
            poll_interval=0.05, heartbeat_interval=0.05, executor=executor, **worker
        ),
    )


def ops(*specs: dict[str, Any]) -> dict[str, Any]:
    return {"customerId": "acme", "operations": list(specs)}


class Recorder:
    """Handlers that count their calls and track how many run at once."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.running = 0
        self.peak = 0
        self.release = anyio.Event()

    async def echo(self, ctx: HandlerContext) -> Any:
        self.calls[ctx.operation.name] += 1
        return ctx.payload

    async def hold(self, ctx: HandlerContext) -> Any:
        self.calls[ctx.operation.name] += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return {"held": ctx.operation.name}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@asynccontextmanager
async def echo_engine(recorder: Recorder) -> AsyncIterator[Engine]:
    # Engines are opened inside each test: a task group must be entered and left by the
    # same task, which an async fixture's setup and teardown are not.
    async with open_engine(
        settings(), handlers={"echo": recorder.echo, "hold": recorder.hold}
    ) as e:
        yield e


async def test_outputs_flow_into_later_operations(recorder: Recorder) -> None:
    async with echo_engine(recorder) as engine:
        progress = await engine.run(
            ops(
                {"name": "a", "type": "echo", "payload": {"size": 3, "tags": ["x"]}},
                {
                    "name": "b",
                    "type": "echo",
                    "payload": {"double": "@<a.out::/size>", "all": "@<a.out>"},
                },
                {
                    "name": "c",
                    "type": "echo",
                    "payload": "size=@<a.out::/size>, id=@<pop.agendaId>",
                },
            ),
            timeout=5,
        )
        results = {op.operation: op.result_payload for op in progress.operation_progress or []}
        assert results["b"] == '{"double":3,"all":{"size":3,"tags":["x"]}}'
        assert results["c"] == f'"size=3, id={progress.agenda_id}"'


async def test_independent_branches_run_concurrently() -> None:
    arrived: list[str] = []
    both = anyio.Event()

    async def rendezvous(ctx: HandlerContext) -> Any:
        arrived.append(ctx.operation.name)
        if len(arrived) == 2:
            both.set()
        with anyio.fail_after(2):  # would time out if the branches ran one after the other
            await both.wait()
        return ctx.operation.name

    async with open_engine(settings(), handlers={"meet": rendezvous}) as engine:
        progress = await engine.run(
            ops(
                {"name": "left", "type": "meet"},
                {"name": "right", "type": "meet"},
                {
                    "name": "join",
                    "type": "sample",
                    "payload": {"resultPayload": ["@<left.out>", "@<right.out>"]},
                },
            ),
            timeout=5,
        )
    assert progress.processing_state_message == "succeeded"
    assert progress.operation_progress is not None
    assert progress.operation_progress[-1].result_payload == '["left","right"]'


async def test_operations_per_agenda_are_bounded(recorder: Recorder) -> None:
    config = settings(executor=ExecutorSettings(max_parallel_operations=2))
    async with open_engine(config, handlers={"hold": recorder.hold}) as engine:
        submission = await engine.start(ops(*({"name": f"h{i}", "type": "hold"} for i in range(5))))
        await _until(lambda: recorder.running == 2)
        await anyio.sleep(0.1)
        assert recorder.running == 2
        recorder.release.set()
        progress = await engine.wait(submission.agenda_id, timeout=5)
    assert recorder.peak == 2
    assert progress.processing_state_message == "succeeded"


async def test_operations_per_worker_are_bounded_across_agendas(recorder: Recorder) -> None:
    async with open_engine(settings(max_operations=3), handlers={"hold": recorder.hold}) as engine:
        first = await engine.submit(ops(*({"name": f"h{i}", "type": "hold"} for i in range(4))))
        second = await engine.submit(ops(*({"name": f"h{i}", "type": "hold"} for i in range(4))))
        await _until(lambda: recorder.running == 3)
        await anyio.sleep(0.1)
        assert recorder.running == 3
        recorder.release.set()
        for submission in (first, second):
            assert (
                await engine.wait(submission.agenda_id, timeout=5)
            ).processing_state_message == "succeeded"
    assert recorder.peak == 3
    assert sum(recorder.calls.values()) == 8


async def test_after_a_failure_running_operations_finish_and_nothing_new_starts(
    recorder: Recorder,
) -> None:
    async def fail(ctx: HandlerContext) -> Any:
        await _until(lambda: recorder.running == 1)
        recorder.release.set()
        raise HandlerError("cannot transcode", payload={"line": 3})

    async with open_engine(
        settings(), handlers={"hold": recorder.hold, "fail": fail, "echo": recorder.echo}
    ) as engine:
        progress = await engine.run(
            ops(
                {"name": "slow", "type": "hold"},
                {"name": "bad", "type": "fail"},
                {"name": "later", "type": "echo", "params": {"dependsOn": "slow"}},
            ),
            timeout=5,
        )
    states = {
        op.operation: (op.processing_state, op.processing_state_message)
        for op in progress.operation_progress or []
    }
    assert states == {
        "slow": ("COMPLETE", "succeeded"),
        "bad": ("COMPLETE", "failed"),
        "later": ("WAITING", "pending"),
    }
    assert recorder.calls["later"] == 0
    assert progress.processing_state_message == "failed"
    bad = next(op for op in progress.operation_progress or [] if op.operation == "bad")
    assert bad.diagnostic_events[0].message == "cannot transcode"
    assert bad.diagnostic_events[0].payload == {"line": 3}


async def test_a_raising_handler_fails_its_operation_with_a_stack_trace(recorder: Recorder) -> None:
    async with echo_engine(recorder) as engine:

        async def crash(ctx: HandlerContext) -> Any:
            raise ZeroDivisionError("division by zero")

        engine.register_handler("crash", crash)
        progress = await engine.run(ops({"name": "x", "type": "crash"}), timeout=5)
        [operation] = progress.operation_progress or []
        [event] = operation.diagnostic_events
        assert event.message == "Resident execution failed for operation: x: division by zero"
        assert "ZeroDivisionError" in (event.stack_trace or "")


async def test_a_reference_that_cannot_resolve_fails_the_operation(recorder: Recorder) -> None:
    async with echo_engine(recorder) as engine:
        progress = await engine.run(
            ops(
                {"name": "a", "type": "echo", "payload": {"k": 1}},
                {"name": "b", "type": "echo", "payload": "@<a.out::/missing>"},
            ),
            timeout=5,
        )
        b = (progress.operation_progress or [])[1]
        assert b.processing_state_message == "failed"
        assert "invalid references: @<a.out::/missing>" in b.diagnostic_events[0].message


async def test_progress_is_recorded_and_coalesced(recorder: Recorder) -> None:
    async with echo_engine(recorder) as engine:

        async def chatty(ctx: HandlerContext) -> Any:
            for percent in range(1, 101):
                await ctx.progress(percent, f"step {percent}", {"JobId": "j"})
                if percent % 25 == 0:
                    await anyio.sleep(0.06)
            return None

        engine.register_handler("chatty", chatty)
        progress = await engine.run(ops({"name": "c", "type": "chatty"}), timeout=5)
        history = await engine.history(progress.agenda_id)
        reported = [e.event for e in history if isinstance(e.event, OperationProgressed)]
        assert 1 <= len(reported) < 20
        [operation] = progress.operation_progress or []
        assert operation.params == {"JobId": "j"}


async def test_a_generator_injects_operations_that_then_run(recorder: Recorder) -> None:
    async def plan(ctx: HandlerContext) -> Any:
        # Generated operations reference each other: only known once the plan has run.
        return {
            "operations": [
                {"name": "part.1", "type": "echo", "payload": {"n": 1}},
                {"name": "part.2", "type": "echo", "payload": {"n": "@<part.1.out::/n>"}},
            ],
            "params": {"planned": True},
        }

    async with echo_engine(recorder) as engine:
        engine.register_handler("plan", plan)
        progress = await engine.run(
            ops(
                {"name": "plan", "type": "plan"},
                {"name": "expand", "type": "updateAgenda", "payload": "@<plan.out>"},
            ),
            timeout=5,
        )
    names = [op.operation for op in progress.operation_progress or []]
    assert names == ["plan", "expand", "part.1", "part.2"]
    assert progress.params == {"planned": True}
    assert all(
        op.processing_state_message == "succeeded" for op in progress.operation_progress or []
    )
    assert recorder.calls == Counter({"part.1": 1, "part.2": 1})


async def test_a_late_outcome_after_losing_the_lease_is_recorded_as_ignored(
    recorder: Recorder,
) -> None:
    async with open_engine(settings(), handlers={"hold": recorder.hold}, claim=False) as engine:
        submission = await engine.start(ops({"name": "h", "type": "hold"}))
        await _until(lambda: recorder.running == 1)
        stream = agenda_stream(submission.agenda_id)
        state = await engine.state_at(submission.agenda_id)
        # Another party (the reclaimer, believing the worker dead) takes the agenda back.
        events = decide(state, Reclaim(state.dispatch, "test: presumed dead"), 0)
        await engine.storage.events.append([AppendRequest(stream, state.version, events)])
        recorder.release.set()
        await _until(lambda: engine.worker.in_flight == 0)
        history = [e.event for e in await engine.history(submission.agenda_id)]
    assert isinstance(history[-2], AgendaReclaimed)
    assert isinstance(history[-1], OperationOutcomeIgnored)
    assert history[-1].outcome == "succeeded"
    assert not any(isinstance(e, OperationSucceeded) for e in history)


async def test_losing_the_lease_cancels_the_operations_still_running(
    recorder: Recorder,
) -> None:
    finish_quick = anyio.Event()
    cancelled: list[str] = []

    async def quick(ctx: HandlerContext) -> Any:
        await finish_quick.wait()
        return "late"

    async def hold(ctx: HandlerContext) -> Any:
        try:
            return await recorder.hold(ctx)
        except anyio.get_cancelled_exc_class():
            cancelled.append(ctx.operation.name)
            raise

    handlers = {"quick": quick, "hold": hold}
    async with open_engine(settings(), handlers=handlers, claim=False) as engine:
        submission = await engine.start(
            ops({"name": "q", "type": "quick"}, {"name": "h", "type": "hold"})
        )
        await _until(lambda: recorder.running == 1)
        state = await engine.state_at(submission.agenda_id)
        events = decide(state, Reclaim(state.dispatch, "test: presumed dead"), 0)
        stream = agenda_stream(submission.agenda_id)
        await engine.storage.events.append([AppendRequest(stream, state.version, events)])
        finish_quick.set()  # its outcome conflicts: the execution learns the lease is gone
        await _until(lambda: engine.worker.in_flight == 0)
        assert cancelled == ["h"]
        assert recorder.running == 0
        history = [e.event for e in await engine.history(submission.agenda_id)]
    assert isinstance(history[-1], OperationOutcomeIgnored)
    assert history[-1].operation == "q"
    assert not any(isinstance(e, OperationSucceeded) for e in history)


async def test_stopping_hands_in_flight_agendas_back_and_another_worker_resumes(
    recorder: Recorder,
) -> None:
    priors: list[Any] = []

    async def slow(ctx: HandlerContext) -> Any:
        priors.append(ctx.prior_progress)
        await ctx.progress(30, "a third", {"JobId": "job-7"})
        return await recorder.hold(ctx)

    handlers = {"slow": slow, "echo": recorder.echo}
    async with open_storage(settings()) as storage:
        async with open_engine(
            settings(shutdown_grace=0.1), handlers=handlers, storage=storage
        ) as first:
            submission = await first.submit(
                ops(
                    {"name": "quick", "type": "echo"},
                    {"name": "slow", "type": "slow", "params": {"dependsOn": "quick"}},
                )
            )
            await _until(lambda: recorder.running == 1)
            await anyio.sleep(0.1)  # let the progress report be recorded
        handed_back = [
            e.event for e in await storage.events.read_stream(agenda_stream(submission.agenda_id))
        ]
        assert isinstance(handed_back[-1], AgendaReclaimed)
        assert "stopped" in handed_back[-1].reason

        assert recorder.running == 0  # the held operation was cancelled before the hand-back
        recorder.release.set()
        async with open_engine(settings(), handlers=handlers, storage=storage) as second:
            progress = await second.wait(submission.agenda_id, timeout=5)
            history = [e.event for e in await second.history(submission.agenda_id)]
    assert progress.processing_state_message == "succeeded"
    assert recorder.calls == Counter({"quick": 1, "slow": 2})
    assert _started(history) == [("quick", 1, 1), ("slow", 1, 1), ("slow", 1, 2)]
    assert priors[0] is None
    assert priors[1]["params"] == {"dependsOn": "quick", "JobId": "job-7"}
    assert priors[1]["attemptCount"] == 1


async def _until(condition: Any, timeout: float = 3.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def _started(history: list[Any]) -> list[tuple[str, int, int]]:
    return [
        (e.operation, e.attempt, e.dispatch) for e in history if isinstance(e, OperationStarted)
    ]


async def test_stopping_hands_back_the_agendas_of_every_claim_and_leaves_no_task(
    recorder: Recorder,
) -> None:
    before = len(asyncio.all_tasks())
    async with open_storage(settings()) as storage:
        async with open_engine(
            settings(shutdown_grace=0.05, claim_batch=2),
            handlers={"hold": recorder.hold},
            storage=storage,
        ) as engine:
            submissions = [
                await engine.submit(ops({"name": "h", "type": "hold"})) for _ in range(5)
            ]
            await _until(lambda: recorder.running == 5)
            assert engine.worker.in_flight == 5
        assert recorder.running == 0
        for submission in submissions:
            stream = agenda_stream(submission.agenda_id)
            last = (await storage.events.read_stream(stream))[-1].event
            assert isinstance(last, AgendaReclaimed)
            assert "stopped" in last.reason
    assert len(asyncio.all_tasks()) == before
