"""External executors (POP's puller and executor pods) driving agendas, on memory and
PostgreSQL: hand out, report, complete; leases that lapse; concurrent pullers; updateAgenda."""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import pytest

from popflow.engine.clock import SystemClock
from popflow.engine.decide import submitted
from popflow.engine.external import MAX_HAND_OUT, ExternalExecutors, HandedOut
from popflow.engine.memory_queue import MemoryWorkQueue
from popflow.engine.postgres_queue import PostgresWorkQueue
from popflow.engine.queue import WorkerInfo, WorkQueue
from popflow.engine.reclaimer import Reclaimer
from popflow.errors import InvalidRequest, InvalidTransition, NotFound
from popflow.events.memory import MemoryEventStore
from popflow.events.postgres import PostgresEventStore
from popflow.events.store import AppendRequest, EventStore, append_one_result
from popflow.events.vocabulary import (
    AgendaInsight,
    Operation,
    OperationsGenerated,
    OperationStarted,
    agenda_stream,
)
from popflow.projections.memory import MemoryProgressStore
from popflow.projections.postgres import PostgresProgressStore
from popflow.projections.progress import AgendaProgress
from popflow.projections.runner import ProjectionRunner
from popflow.projections.store import ProgressStore
from tests.conftest import fresh_pool
from tests.support.agendas import agenda, op

INSIGHT = AgendaInsight(resource_pool_id="pool", insight_id="transcode")
LEASE_TIMEOUT = 0.2
"""The reclaimer's lease in these tests: a silent holder loses its agenda after this."""


class FakeClock(SystemClock):
    """Real wall-clock time; a monotonic clock the test moves (for ExternalExecutors' leases)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class Setup:
    events: EventStore
    queue: WorkQueue
    progress: ProgressStore
    clock: FakeClock
    external: ExternalExecutors

    async def submit(self, agenda_id: str, *operations: Operation) -> None:
        event = submitted(
            agenda(*operations), agenda_id=agenda_id, progress_id=f"p-{agenda_id}", insight=INSIGHT
        )
        await self.events.append([AppendRequest(agenda_stream(agenda_id), 0, [event])])

    async def report(self, agenda_id: str, *operations: dict[str, Any], **fields: Any) -> None:
        body = {"id": f"p-{agenda_id}", "operationProgress": list(operations), **fields}
        await self.external.report(body, agenda_id=agenda_id)

    async def progress_of(self, agenda_id: str) -> AgendaProgress:
        await ProjectionRunner(self.events, self.progress).catch_up()
        found = await self.progress.agenda_progress(f"p-{agenda_id}")
        assert found is not None
        return found

    async def event_types(self, agenda_id: str) -> list[type[Any]]:
        return [type(e.event) for e in await self.events.read_stream(agenda_stream(agenda_id))]

    def reclaimer(self) -> Reclaimer:
        return Reclaimer(
            queue=self.queue, events=self.events, clock=SystemClock(), lease_timeout=LEASE_TIMEOUT
        )


@pytest.fixture(params=["memory", "postgres"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    clock = FakeClock()

    def build(events: EventStore, queue: WorkQueue, progress: ProgressStore) -> Setup:
        append = functools.partial(append_one_result, events)
        external = ExternalExecutors(events, queue, append, clock, lease_seconds=60)
        return Setup(events, queue, progress, clock, external)

    if request.param == "memory":
        memory = MemoryEventStore()
        yield build(memory, MemoryWorkQueue(memory), MemoryProgressStore())
        return
    async with fresh_pool(request.getfixturevalue("postgres_template")) as pool:
        store = PostgresEventStore(pool)
        await store.listen()
        try:
            yield build(store, PostgresWorkQueue(store), PostgresProgressStore(pool))
        finally:
            await store.close()


def pop_op(name: str, state: str, message: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "operation": name,
        "processingState": state,
        "processingStateMessage": message,
        **fields,
    }


async def hand_out_one(setup: Setup, holder: str = "puller") -> HandedOut:
    [handed] = await setup.external.hand_out("transcode", 1, holder=holder)
    return handed


async def test_hand_out_report_and_complete_give_pops_final_progress(setup: Setup) -> None:
    await setup.submit("a1", op("probe"), op("encode", payload="@<probe.out::/width>"))
    before = time.time() * 1000
    handed = await hand_out_one(setup)
    assert handed.agenda_id == "a1"
    assert handed.worker_id.startswith("external:puller:")
    assert handed.progress is None  # a fresh run has nothing to resume
    assert handed.agenda["progressId"] == "p-a1"
    assert handed.agenda["agendaInsight"] == {"resourcePoolId": "pool", "insightId": "transcode"}
    assert [o["name"] for o in handed.agenda["operations"]] == ["probe", "encode"]
    assert before - 60_000 < handed.agenda["params"]["added"] <= time.time() * 1000

    await setup.report(
        "a1", pop_op("probe", "EXECUTING", percentComplete=50.0), processingState="EXECUTING"
    )
    running = await setup.progress_of("a1")
    assert (running.processing_state, running.percent_complete) == ("EXECUTING", 25.0)

    await setup.report(
        "a1",
        pop_op("probe", "COMPLETE", "succeeded", resultPayload='{"width": 640}'),
        pop_op("encode", "COMPLETE", "succeeded", resultPayload='{"file": "out.mp4"}'),
        processingState="COMPLETE",
        processingStateMessage="succeeded",
    )
    final = await setup.progress_of("a1")
    assert (final.processing_state, final.processing_state_message) == ("COMPLETE", "succeeded")
    assert final.percent_complete == 100.0
    assert final.attempts_completed == 1
    assert final.operation_progress is not None
    by_name = {o.operation: o for o in final.operation_progress}
    assert by_name["encode"].id == "p-a1-encode"
    assert by_name["encode"].result_payload == '{"file":"out.mp4"}'
    assert by_name["probe"].percent_complete == 100.0
    # The identity held only this agenda: retired with it.
    assert not await setup.queue.heartbeat(handed.worker_id)
    with pytest.raises(InvalidTransition, match="complete"):
        await setup.report("a1", processingState="COMPLETE", processingStateMessage="succeeded")


async def test_a_lapsed_lease_is_handed_out_again_with_the_prior_progress(setup: Setup) -> None:
    await setup.submit("a1", op("probe"), op("encode", dependsOn="probe"))
    first = await hand_out_one(setup, "puller-1")
    await setup.report(
        "a1",
        pop_op("probe", "COMPLETE", "succeeded", resultPayload='{"width": 640}'),
        pop_op("encode", "EXECUTING", percentComplete=30.0, params={"JobId": "job-1"}),
        processingState="EXECUTING",
    )
    # The executor falls silent; its lease outlives lease_seconds only while renewed.
    setup.clock.now += 61
    assert await setup.external.renew() == 0
    await anyio.sleep(LEASE_TIMEOUT * 1.5)
    assert await setup.reclaimer().sweep() == 1
    assert not await setup.queue.heartbeat(first.worker_id)  # retired with its lease
    with pytest.raises(InvalidTransition, match="not held by an external executor"):
        await setup.report("a1", processingState="EXECUTING")

    second = await hand_out_one(setup, "puller-2")
    assert second.worker_id != first.worker_id
    assert not await setup.queue.heartbeat(first.worker_id)  # the lapsed identity is gone
    prior = second.progress
    assert prior is not None
    by_name = {o["operation"]: o for o in prior["operationProgress"]}
    assert (by_name["probe"]["processingState"], by_name["probe"]["resultPayload"]) == (
        "COMPLETE",
        '{"width":640}',
    )
    assert by_name["encode"]["processingState"] == "EXECUTING"
    assert by_name["encode"]["params"] == {"dependsOn": "probe", "JobId": "job-1"}

    # The new executor skips probe (succeeded) and reports only encode.
    await setup.report(
        "a1",
        pop_op("encode", "COMPLETE", "succeeded", resultPayload="{}"),
        processingState="COMPLETE",
        processingStateMessage="succeeded",
    )
    final = await setup.progress_of("a1")
    assert final.processing_state_message == "succeeded"
    starts = [
        (e.event.operation, e.event.dispatch)
        for e in await setup.events.read_stream(agenda_stream("a1"))
        if isinstance(e.event, OperationStarted)
    ]
    assert starts == [("probe", 1), ("encode", 1), ("encode", 2)]


async def test_reports_and_renewals_keep_a_lease_alive(setup: Setup) -> None:
    await setup.submit("a1", op("probe"))
    handed = await hand_out_one(setup)  # kept alive until t=60
    await anyio.sleep(LEASE_TIMEOUT * 0.75)
    setup.clock.now = 40
    assert await setup.external.renew() == 1
    await setup.report("a1", processingState="EXECUTING")  # kept alive until t=100
    await anyio.sleep(LEASE_TIMEOUT * 0.75)
    setup.clock.now = 80
    assert await setup.external.renew() == 1
    assert await setup.reclaimer().sweep() == 0
    assert await setup.queue.heartbeat(handed.worker_id)


async def test_concurrent_hand_outs_never_share_an_agenda(setup: Setup) -> None:
    for n in range(12):
        await setup.submit(f"a{n}", op("probe"))
    got: Counter[str] = Counter()

    async def puller(name: str) -> None:
        while handed := await setup.external.hand_out("transcode", 3, holder=name):
            got.update(h.agenda_id for h in handed)

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(puller, f"puller-{n}")
    assert got == Counter({f"a{n}": 1 for n in range(12)})


async def test_update_agenda_adds_operations_once(setup: Setup) -> None:
    expand = op(
        "expand", "updateAgenda", {"operations": "@<probe.out::/operations>"}, dependsOn="probe"
    )
    await setup.submit("a1", op("probe"), expand)
    await hand_out_one(setup)
    extra = {"name": "extra", "type": "sample", "params": {"generatedOperationParent": "expand"}}
    await setup.report(
        "a1",
        pop_op("probe", "COMPLETE", "succeeded", resultPayload='{"operations": []}'),
        pop_op("expand", "EXECUTING"),
        processingState="EXECUTING",
    )
    # POP's updateAgenda handler retries the call: both land, the operations are added once.
    for _ in range(2):
        state = await setup.external.add_operations("a1", [extra], {"quality": "hd"})
        assert list(state.operations) == ["probe", "expand", "extra"]
    await setup.report(
        "a1",
        pop_op("expand", "COMPLETE", "succeeded", resultPayload=_json({"operations": [extra]})),
        pop_op("extra", "COMPLETE", "succeeded"),
        processingState="COMPLETE",
        processingStateMessage="succeeded",
    )
    assert (await setup.event_types("a1")).count(OperationsGenerated) == 1
    final = await setup.progress_of("a1")
    assert final.processing_state_message == "succeeded"
    assert final.params["quality"] == "hd"
    assert final.operation_progress is not None
    assert [o.operation for o in final.operation_progress] == ["probe", "expand", "extra"]

    with pytest.raises(InvalidTransition, match="operations can no longer be added"):
        await setup.external.add_operations("a1", [{"name": "late", "type": "t"}], None)
    with pytest.raises(NotFound):
        await setup.external.add_operations("nope", [{"name": "late", "type": "t"}], None)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def test_reports_need_an_external_holder(setup: Setup) -> None:
    await setup.submit("a1", op("probe"))
    with pytest.raises(InvalidTransition, match="status ready\\)"):
        await setup.report("a1", processingState="EXECUTING")
    await setup.queue.register(WorkerInfo("w-internal", "host", 1))
    await setup.queue.claim("w-internal", 1)
    with pytest.raises(InvalidTransition, match="status dispatched, worker w-internal"):
        await setup.report("a1", processingState="EXECUTING")
    with pytest.raises(NotFound):
        await setup.report("nope", processingState="EXECUTING")


@pytest.mark.parametrize(
    ("insight", "count", "message"),
    [
        ("", 1, "InsightId is required to getAgenda."),
        ("transcode", None, "Count is required to getAgenda."),
        ("transcode", 0, "Count must be greater than 0 for getAgenda."),
    ],
)
async def test_get_agenda_requests_are_checked(
    setup: Setup, insight: str, count: int | None, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await setup.external.hand_out(insight, count, holder="puller")


async def test_hand_outs_are_capped_and_an_empty_queue_leaves_no_worker_behind() -> None:
    events = MemoryEventStore()
    queue = MemoryWorkQueue(events)
    append = functools.partial(append_one_result, events)
    external = ExternalExecutors(events, queue, append, SystemClock(), lease_seconds=30)
    setup = Setup(events, queue, MemoryProgressStore(), FakeClock(), external)
    for n in range(MAX_HAND_OUT + 1):
        await setup.submit(f"a{n}", op("probe"))
    assert len(await external.hand_out("transcode", 1000, holder="puller")) == MAX_HAND_OUT
    assert len(await external.hand_out("transcode", 1000, holder="puller")) == 1
    assert await external.hand_out("transcode", 5, holder="puller") == []
    assert await external.hand_out("elsewhere", 5, holder="puller") == []
    assert len(queue._heartbeats) == MAX_HAND_OUT + 1
