"""A claim opens the agendas it takes, on both storage adapters: ``agenda.started`` and the
first operations' starts are appended with the dispatch, so those operations run as soon
as the claim commits; the slots the openings take reach the executions, or come back."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from popflow.bootstrap import Storage, open_engine
from popflow.engine.queue import ClaimedAgenda, Opening
from popflow.events.vocabulary import (
    AgendaDispatched,
    AgendaStarted,
    AgendaSucceeded,
    OperationStarted,
)
from tests.support.agendas import agenda, op
from tests.support.stores import ADAPTERS, engine_settings, storage_for


@pytest.fixture(params=ADAPTERS)
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    async with storage_for(request.param, request) as opened:
        yield opened


class Claims:
    """What the worker's claims returned; ``drop_first`` hides the first agenda claimed
    from the worker, as if a concurrent claim had taken it after its opening ran."""

    def __init__(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch, *, drop_first: bool = False
    ) -> None:
        self.claimed: list[ClaimedAgenda] = []
        self.dropped: list[ClaimedAgenda] = []
        self._drop = drop_first
        self._claim = storage.queue.claim
        monkeypatch.setattr(storage.queue, "claim", self._claimed)

    async def _claimed(
        self, worker_id: str, limit: int, *, opening: Opening | None = None, **scope: Any
    ) -> Sequence[ClaimedAgenda]:
        assert opening is not None, "the worker opens what it claims"
        claimed = await self._claim(worker_id, limit, opening=opening, **scope)
        if claimed and self._drop:
            self._drop = False
            self.dropped.extend(claimed)
            return []
        self.claimed.extend(claimed)
        return claimed


async def test_a_claim_records_the_start_of_the_operations_that_may_start(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = Claims(storage, monkeypatch)
    spec = agenda(op("a"), op("b", dependsOn="a"), op("c"))
    async with open_engine(engine_settings(), storage=storage) as engine:
        submission = await engine.submit(spec)
        with anyio.fail_after(10):
            await engine.wait(submission.agenda_id)
        history = [e.event for e in await engine.history(submission.agenda_id)]

    [claimed] = claims.claimed
    opened = [e.event for e in claimed.history[1:]]
    assert [type(e) for e in opened] == [
        AgendaDispatched,
        AgendaStarted,
        OperationStarted,
        OperationStarted,
    ]
    assert [e.operation for e in opened if isinstance(e, OperationStarted)] == ["a", "c"]
    assert history[: len(claimed.history)] == [e.event for e in claimed.history]
    started = Counter(e.operation for e in history if isinstance(e, OperationStarted))
    assert started == Counter({"a": 1, "b": 1, "c": 1})  # the execution did not start them again
    assert sum(isinstance(e, AgendaStarted) for e in history) == 1
    assert isinstance(history[-1], AgendaSucceeded)


async def test_an_opening_takes_only_the_free_slots_and_every_slot_comes_back(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = Claims(storage, monkeypatch)
    async with open_engine(engine_settings(max_operations=3), storage=storage) as engine:
        submissions = [
            await engine.submit(agenda(*(op(f"o{i}") for i in range(5)))) for _ in range(6)
        ]
        with anyio.fail_after(20):
            for submission in submissions:
                await engine.wait(submission.agenda_id)
        slots = engine.worker._slots
        assert slots.free == slots.size == 3
    for claimed in claims.claimed:
        starts = [e for e in claimed.history if isinstance(e.event, OperationStarted)]
        assert len(starts) <= 3


async def test_the_slots_of_an_opening_the_claim_did_not_keep_come_back(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = Claims(storage, monkeypatch, drop_first=True)
    async with open_engine(engine_settings(max_operations=4), storage=storage) as engine:
        lost = await engine.submit(agenda(op("x"), op("y")))
        with anyio.fail_after(10):
            while not claims.dropped:
                await anyio.sleep(0.01)
        [dropped] = claims.dropped
        assert dropped.agenda_id == lost.agenda_id
        assert sum(isinstance(e.event, OperationStarted) for e in dropped.history) == 2
        slots = engine.worker._slots
        assert slots.free == 4  # the two slots its opening took are back
        kept = await engine.submit(agenda(*(op(f"o{i}") for i in range(4))))
        with anyio.fail_after(10):
            await engine.wait(kept.agenda_id)  # all four slots were free for it
        assert slots.free == 4
