"""A farm for scheduling tests: pools, insights and customers made through the directory,
agendas submitted through the agenda service (routed to their insights like any other
submission), and short labels for the agendas, so that claims read as ``["a1", "b1"]``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from popflow.bootstrap import Storage
from popflow.engine.directory import Directory
from popflow.engine.queue import WorkerInfo
from popflow.engine.router import InsightRouter
from popflow.engine.service import AgendaService
from popflow.engine.state import AgendaState, replay
from popflow.engine.visibility import Caller
from popflow.events.store import AppendRequest, append_one
from popflow.events.vocabulary import (
    AgendaReclaimed,
    AgendaStarted,
    AgendaSucceeded,
    ObjectCreated,
    agenda_stream,
    object_stream,
)
from popflow.projections.documents import CUSTOMER, INSIGHT, RESOURCE_POOL
from tests.support.agendas import agenda, op

OPERATOR = Caller("scheduling-tests", frozenset(), is_super_user=True)
OWNER = "farm"
"""The customer owning the pools and insights."""
LANE = "lane"
"""The agenda parameter that routes an agenda to the insight of the same id."""


class SteppingClock:
    """Each reading a millisecond after the last: objects made one after the other get
    distinct ``addedTime``s, which order the customers' turns in round robin."""

    def __init__(self) -> None:
        self._ms = 1_767_225_600_000

    def now_ms(self) -> int:
        self._ms += 1
        return self._ms

    def monotonic(self) -> float:
        return self._ms / 1000


class Farm:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.clock = SteppingClock()
        self.directory = Directory(storage.events, storage.documents, clock=self.clock)
        self.service = AgendaService(storage.events, route=InsightRouter(storage.documents))
        self.ids: dict[str, str] = {}
        """Agenda id by label."""
        self.labels: dict[str, str] = {}
        """Label by agenda id."""
        self._workers: set[str] = set()

    # --- the directory --------------------------------------------------------------------

    async def pool(self, pool_id: str = "pool") -> str:
        fields = {"id": pool_id, "customerId": OWNER, "title": pool_id}
        await self.directory.create(RESOURCE_POOL, fields, OPERATOR)
        return pool_id

    async def insight(self, insight_id: str, *, pool: str = "pool", **fields: Any) -> str:
        """An insight taking the agendas whose ``lane`` parameter is its id."""
        await self.directory.create(INSIGHT, self._insight_body(insight_id, pool, fields), OPERATOR)
        return insight_id

    async def raw_insight(self, insight_id: str, *, pool: str = "pool", **fields: Any) -> str:
        """An insight recorded without the directory's checks, as an old or hand-written
        event could hold it (values the directory refuses, say)."""
        event = ObjectCreated(
            kind=INSIGHT,
            object_id=insight_id,
            customer_id=OWNER,
            document=self._insight_body(insight_id, pool, fields),
            time=self.clock.now_ms(),
        )
        await append_one(
            self.storage.events, AppendRequest(object_stream(INSIGHT, insight_id), 0, [event])
        )
        return insight_id

    @staticmethod
    def _insight_body(insight_id: str, pool: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": insight_id,
            "customerId": OWNER,
            "title": insight_id,
            "resourcePoolId": pool,
            "isGlobal": True,
            "mappers": {"paramMap": [f"{LANE}={insight_id}"]},
            **fields,
        }

    async def customers(self, *customer_ids: str, pool: str = "pool") -> None:
        """Customers of ``pool``, made in this order (their order in round robin)."""
        for customer_id in customer_ids:
            fields = {"customerId": customer_id, "title": customer_id, "resourcePoolId": pool}
            await self.directory.create(CUSTOMER, fields, OPERATOR)

    # --- agendas ------------------------------------------------------------------------------

    async def submit(self, label: str, customer: str, lane: str, **params: Any) -> str:
        """Submit an agenda of ``customer`` routed to the insight ``lane``."""
        submission = await self.service.submit(
            agenda(op("a"), customer=customer, **{LANE: lane, **params})
        )
        self.ids[label] = submission.agenda_id
        self.labels[submission.agenda_id] = label
        return submission.agenda_id

    async def submit_many(self, customer: str, lane: str, labels: Sequence[str]) -> None:
        for label in labels:
            await self.submit(label, customer, lane)

    async def claim(
        self,
        limit: int,
        *,
        worker: str = "w1",
        insights: Sequence[str] | None = None,
        resource_pool: str | None = None,
    ) -> list[str]:
        """The labels of the agendas a claim dispatched, in the order it took them."""
        if worker not in self._workers:
            await self.storage.queue.register(WorkerInfo(worker, "host", 1))
            self._workers.add(worker)
        claimed = await self.storage.queue.claim(
            worker, limit, insights=insights, resource_pool=resource_pool
        )
        return [self.labels[c.agenda_id] for c in claimed]

    async def update_params(self, label: str, params: dict[str, Any]) -> None:
        await self.service.update(self.ids[label], {"params": params}, now_ms=0)

    async def reclaim(self, label: str) -> None:
        """Hand a dispatched agenda back, as the reclaimer does for a dead worker."""
        stream, state = await self._state(label)
        event = AgendaReclaimed(
            worker_id=state.worker_id or "", dispatch=state.dispatch, reason="test"
        )
        await append_one(self.storage.events, AppendRequest(stream, state.version, [event]))

    async def start(self, label: str) -> None:
        stream, state = await self._state(label)
        event = AgendaStarted(worker_id=state.worker_id or "", dispatch=state.dispatch)
        await append_one(self.storage.events, AppendRequest(stream, state.version, [event]))

    async def complete(self, label: str) -> None:
        stream, state = await self._state(label)
        event = AgendaSucceeded(dispatch=state.dispatch)
        await append_one(self.storage.events, AppendRequest(stream, state.version, [event]))

    async def _state(self, label: str) -> tuple[str, AgendaState]:
        stream = agenda_stream(self.ids[label])
        state = replay(e.event for e in await self.storage.events.read_stream(stream))
        assert state is not None
        return stream, state

    async def dispatch_order(self) -> list[str]:
        """The labels of every dispatch recorded, in the log's order."""
        events = await self.storage.events.read_all(after=0, limit=100_000)
        return [
            self.labels[e.stream_id.removeprefix("agenda-")]
            for e in events
            if e.type == "agenda.dispatched"
        ]
