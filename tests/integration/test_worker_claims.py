"""When the worker claims, on both storage adapters: once per agenda that becomes ready
(the events of its own claims and executions do not wake it), at once on a submission
(no poll, no pause), and no more often than ``idle_claim_interval`` while wake-ups bring
nothing it may take (an insight at its queueSize)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from popflow.adapters.memory import HandlerContext
from popflow.bootstrap import Engine, Storage, open_engine
from popflow.engine.queue import ClaimedAgenda
from tests.support.agendas import agenda, op
from tests.support.scheduling import LANE, Farm
from tests.support.stores import ADAPTERS, engine_settings, storage_for


@pytest.fixture(params=ADAPTERS)
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    async with storage_for(request.param, request) as opened:
        yield opened


class ClaimLog:
    """Counts the worker's claims (and those that found nothing) on ``storage``'s queue."""

    def __init__(self, storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
        self.claims = 0
        self.empty = 0
        self._claim = storage.queue.claim
        monkeypatch.setattr(storage.queue, "claim", self._counted)

    async def _counted(self, worker_id: str, limit: int, **scope: Any) -> Sequence[ClaimedAgenda]:
        claimed = await self._claim(worker_id, limit, **scope)
        self.claims += 1
        self.empty += not claimed
        return claimed


async def test_an_idle_worker_claims_once_per_agenda_at_once(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = ClaimLog(storage, monkeypatch)
    async with open_engine(engine_settings(), storage=storage) as engine:
        for n in range(5):
            submission = await engine.submit(agenda(*(op(f"o{i}") for i in range(4))))
            with anyio.fail_after(5):  # a lost wake-up would wait for the poll
                await engine.wait(submission.agenda_id)
            await anyio.sleep(0.05)  # the last appends commit and wake whom they wake
            assert claims.claims - claims.empty == n + 1
        # One empty claim at start; the agendas' own events woke nothing.
        assert claims.empty <= 1


async def test_wake_ups_it_cannot_use_are_spaced_by_the_idle_claim_interval(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    farm = Farm(storage)
    await farm.pool()
    await farm.insight("single", queueSize=1)
    await farm.customers("acme")
    gate = anyio.Event()

    async def gated(_context: HandlerContext) -> dict[str, Any]:
        await gate.wait()
        return {}

    claims = ClaimLog(storage, monkeypatch)
    interval = 0.05
    async with open_engine(
        engine_settings(idle_claim_interval=interval), storage=storage, handlers={"gated": gated}
    ) as engine:
        first = await _submit(engine, "gated")
        with anyio.fail_after(5):
            while claims.claims - claims.empty < 1:
                await anyio.sleep(0.01)
        before, started = claims.claims, time.monotonic()
        waiting = []
        for _ in range(40):
            waiting.append(await _submit(engine, "sample"))
            await anyio.sleep(0.005)
        await anyio.sleep(0.1)
        elapsed = time.monotonic() - started
        # Each submission woke the worker; a claim each would be 40.
        assert claims.claims - before <= elapsed / interval + 3
        gate.set()
        with anyio.fail_after(5):  # each agenda leaving the insight wakes the worker
            for agenda_id in [first, *waiting]:
                await engine.wait(agenda_id)


async def _submit(engine: Engine, operation_type: str) -> str:
    spec = agenda(op("a", operation_type), customer="acme", **{LANE: "single"})
    return (await engine.submit(spec)).agenda_id
