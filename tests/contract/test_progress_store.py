"""The progress store contract (memory and PostgreSQL): batches, checkpoints, reads, rebuild."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import anyio
import pytest

from popflow.bootstrap import Storage
from popflow.engine.decide import Command, Dispatch, Finish, RecordOutcome, Start, StartOperation
from popflow.engine.runner import Succeeded
from popflow.events.store import AppendRequest, EventStore, RecordedEvent
from popflow.projections.runner import ProjectionRunner
from tests.support.agendas import Scenario, agenda, op
from tests.support.stores import ADAPTERS, storage_for


@pytest.fixture(params=ADAPTERS)
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    async with storage_for(request.param, request) as opened:
        yield opened


async def record(storage: Storage, agenda_id: str, link: str, *, finish: bool) -> None:
    spec = agenda(op("a"), op("b", dependsOn="a"), link_id=link)
    s = Scenario(spec, agenda_id=agenda_id, progress_id=f"p-{agenda_id}")
    s.do_all(
        [Dispatch("w"), Start(1), StartOperation("a", 1), RecordOutcome("a", 1, 1, Succeeded(1))]
    )
    if finish:
        s.do_all([StartOperation("b", 1), RecordOutcome("b", 1, 1, Succeeded(2)), Finish(1)])
    await storage.events.append([AppendRequest(f"agenda-{agenda_id}", 0, s.events)])


async def test_the_runner_projects_progress_and_checkpoints(storage: Storage) -> None:
    await record(storage, "x", "job-1", finish=True)
    await record(storage, "y", "job-1", finish=False)
    runner = ProjectionRunner(storage.events, storage.progress, batch_size=3)
    applied = await runner.catch_up()
    assert applied == await storage.events.head()
    assert await storage.progress.checkpoint() == await storage.events.head()
    x = await storage.progress.agenda_progress("x")
    assert x is not None
    assert (x.processing_state, x.processing_state_message) == ("COMPLETE", "succeeded")
    assert [o.operation for o in x.operation_progress or []] == ["a", "b"]
    assert await storage.progress.agenda_progress("p-x") == x  # by progress id too
    y = await storage.progress.operation_progress("p-y-b")
    assert y is not None
    assert y.processing_state == "WAITING"
    linked = await storage.progress.agenda_progress_by_link("job-1")
    assert sorted(p.agenda_id for p in linked) == ["x", "y"]
    assert await storage.progress.agenda_progress("nope") is None
    assert await runner.catch_up() == 0


async def test_a_rebuild_reproduces_the_same_progress(storage: Storage) -> None:
    await record(storage, "x", "job-1", finish=True)
    runner = ProjectionRunner(storage.events, storage.progress, batch_size=2)
    await runner.catch_up()
    before = await storage.progress.agenda_progress("x")
    assert await runner.rebuild() == await storage.events.head()
    assert await storage.progress.agenda_progress("x") == before


async def test_runners_taking_turns_never_fold_into_views_gone_stale(storage: Storage) -> None:
    """A runner keeps the views of agendas in flight between its batches; once another
    runner has moved the checkpoint, it must read the rows again."""
    s = Scenario(agenda(op("a"), op("b", dependsOn="a")), agenda_id="x", progress_id="p-x")
    runners = [ProjectionRunner(storage.events, storage.progress) for _ in range(2)]
    turns: list[list[Command]] = [
        [Dispatch("w"), Start(1)],
        [StartOperation("a", 1)],
        [RecordOutcome("a", 1, 1, Succeeded(1))],
        [StartOperation("b", 1)],
    ]
    appended = 0
    for turn, commands in enumerate(turns):
        s.do_all(commands)
        await storage.events.append([AppendRequest("agenda-x", appended, s.events[appended:])])
        appended = len(s.events)
        assert await runners[turn % 2].catch_up() > 0
        assert await runners[(turn + 1) % 2].catch_up() == 0  # finds the checkpoint moved
    live = await storage.progress.agenda_progress("x")
    assert live is not None
    assert [o.processing_state for o in live.operation_progress or []] == ["COMPLETE", "EXECUTING"]
    await runners[0].rebuild()
    assert await storage.progress.agenda_progress("x") == live


async def test_the_runner_lets_appends_settle_unless_someone_waits(storage: Storage) -> None:
    runner = ProjectionRunner(storage.events, storage.progress, poll_interval=0.05, settle=60.0)
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await record(storage, "x", "job-1", finish=True)
        head = await storage.events.head()
        await anyio.sleep(0.3)  # woken (or polled) by now, and settling
        assert await storage.progress.checkpoint() == 0
        with anyio.fail_after(5):
            await runner.wait_for(head)  # cuts the settling short
        assert await storage.progress.checkpoint() == head
        assert await storage.progress.agenda_progress("x") is not None
        tg.cancel_scope.cancel()


async def test_a_runner_that_keeps_one_view_loads_the_others_and_agrees_with_a_rebuild(
    storage: Storage,
) -> None:
    spec = agenda(op("a"), op("b", dependsOn="a"))
    scenarios = {
        name: Scenario(spec, agenda_id=name, progress_id=f"p-{name}") for name in ("x", "y")
    }
    runner = ProjectionRunner(storage.events, storage.progress, followed=1)
    appended = dict.fromkeys(scenarios, 0)
    turns: list[list[Command]] = [
        [Dispatch("w"), Start(1)],
        [StartOperation("a", 1)],
        [RecordOutcome("a", 1, 1, Succeeded(1))],
        [StartOperation("b", 1)],
    ]
    for commands in turns:
        for name, s in scenarios.items():  # x then y: y pushes x out of the runner's memory
            s.do_all(commands)
            request = AppendRequest(f"agenda-{name}", appended[name], s.events[appended[name] :])
            await storage.events.append([request])
            appended[name] = len(s.events)
            assert await runner.catch_up() > 0
    live = {name: await storage.progress.agenda_progress(name) for name in scenarios}
    for view in live.values():
        assert view is not None
        assert [o.processing_state for o in view.operation_progress or []] == [
            "COMPLETE",
            "EXECUTING",
        ]
    await runner.rebuild()
    assert {name: await storage.progress.agenda_progress(name) for name in scenarios} == live


class CountingReads:
    """An event store that counts the pages read."""

    def __init__(self, events: EventStore) -> None:
        self.events = events
        self.reads = 0

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        self.reads += 1
        return await self.events.read_all(after=after, limit=limit)


async def test_a_catch_up_stops_at_a_short_page(storage: Storage) -> None:
    await record(storage, "x", "job-1", finish=True)
    head = await storage.events.head()
    assert head % 3 != 0
    counting = CountingReads(storage.events)
    runner = ProjectionRunner(cast("EventStore", counting), storage.progress, batch_size=3)
    assert await runner.catch_up() == head
    assert counting.reads == head // 3 + 1  # the full pages, then a short one: no empty read
