"""The progress store contract (memory and PostgreSQL): batches, checkpoints, reads, rebuild."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from popflow.bootstrap import Storage
from popflow.engine.decide import Dispatch, Finish, RecordOutcome, Start, StartOperation
from popflow.engine.runner import Succeeded
from popflow.events.store import AppendRequest
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
