"""Latency from submission to the first operation's start, idle and at half load.

Each measurement gets a fresh database and one engine (:func:`popflow.bootstrap.open_engine`,
popflow's default worker settings, ``synchronous_commit=on``). Its agendas hold
:data:`OPERATIONS` independent operations of a no-op handler type of the benchmark's own
(:data:`PROBE_TYPE`), which records the moment the first of an agenda's operations starts
to run. An agenda's latency runs from just before :meth:`Engine.submit` until then: the
submission's commit, the worker's wake-up and claim, and the recording of the operations'
start.

* **Idle**: agendas submitted one at a time, each once every operation of the previous
  one has run and a pause (:data:`IDLE_PAUSE_S`) has let the engine settle.
* **At half load**: a saturating burst first measures the engine's throughput (operations
  per second, from the first submission until every agenda of the burst has succeeded);
  then agendas arrive open-loop, on a fixed schedule at half of that rate (in agendas per
  second), each submitted by a task of its own started at its arrival time, whether or not
  earlier submissions have returned.

Percentiles are :func:`statistics.quantiles` cut points (``n=100``, ``method="inclusive"``,
interpolating between the nearest ranks).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any, TypeAlias, TypeVar

import anyio
import asyncpg
import msgspec

from bench.scenario import Context, Figures, Scenario
from bench.server import BenchError, endings_after, fresh_database, with_server_settings
from popflow.adapters.memory import HandlerContext
from popflow.bootstrap import Engine, open_engine
from popflow.engine.worker import WorkerSettings
from popflow.settings import Settings

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
T = TypeVar("T")

PROBE_TYPE = "benchLatencyProbe"
"""The operation type of the measured agendas: a no-op that notes when it starts."""
OPERATIONS = 10
IDLE_AGENDAS = 200
QUICK_IDLE_AGENDAS = 20
IDLE_PAUSE_S = 0.05
"""After every operation of an agenda has run: time for its last appends to commit and
for the worker to go back to waiting, so that the next submission finds it idle."""
BURST_AGENDAS = 1_000
QUICK_BURST_AGENDAS = 50
BURST_SUBMITTERS = 8
LOAD_SECONDS = 5.0
QUICK_LOAD_SECONDS = 1.0
LOAD_SHARE = 0.5
"""The offered load, as a share of the throughput the burst measured."""
WORKER = WorkerSettings()

IDLE_P50 = "latency idle: p50 ms"
IDLE_P99 = "latency idle: p99 ms"
LOAD_P50 = "latency at half load: p50 ms"
LOAD_P99 = "latency at half load: p99 ms"
LOAD_RATE = "latency at half load: agendas/s offered"

_TIMEOUT_S = 300.0
_WATCH_INTERVAL_S = 0.01


def probe_agenda() -> bytes:
    """An agenda of :data:`OPERATIONS` independent probe operations, as JSON text."""
    document: dict[str, Any] = {
        "customerId": "bench",
        "operations": [
            {"name": f"op-{n}", "type": PROBE_TYPE, "payload": {}} for n in range(1, OPERATIONS + 1)
        ],
    }
    return msgspec.json.encode(document)


class Probe:
    """The probe handler, and what it saw: when each agenda's first operation started and
    how many of its operations have run."""

    def __init__(self) -> None:
        self.first_start: dict[str, float] = {}
        self.ran: Counter[str] = Counter()
        self._changed = anyio.Event()

    async def handler(self, context: HandlerContext) -> dict[str, Any]:
        now = time.perf_counter()
        agenda_id = context.agenda_id
        self.first_start.setdefault(agenda_id, now)
        self.ran[agenda_id] += 1
        self._changed.set()
        self._changed = anyio.Event()
        return {}

    async def wait_until_ran(self, agenda_ids: Sequence[str]) -> None:
        """Until every operation of the agendas ``agenda_ids`` has run."""
        while any(self.ran[agenda_id] < OPERATIONS for agenda_id in agenda_ids):
            await self._changed.wait()

    def latencies_ms(self, submitted: dict[str, float]) -> list[float]:
        return [(self.first_start[a] - t) * 1000 for a, t in submitted.items()]


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    """The 50th and 99th percentiles of ``values`` (at least two)."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def measure(context: Context) -> Figures:
    idle_agendas = QUICK_IDLE_AGENDAS if context.quick else IDLE_AGENDAS
    burst_agendas = QUICK_BURST_AGENDAS if context.quick else BURST_AGENDAS
    seconds = QUICK_LOAD_SECONDS if context.quick else LOAD_SECONDS
    probe = Probe()
    body = probe_agenda()
    async with fresh_database(context.dsn) as database:
        settings = Settings(
            dsn=with_server_settings(database, synchronous_commit="on"), worker=WORKER
        )
        async with open_engine(settings, handlers={PROBE_TYPE: probe.handler}) as engine:
            context.say(f"latency: {idle_agendas} agendas, one at a time")
            idle = await _timed("idle", _idle(engine, probe, body, idle_agendas))
            context.say(f"latency: a burst of {burst_agendas} agendas for the throughput")
            watch = await asyncpg.connect(database)
            try:
                burst = await _timed("burst", _burst(engine, watch, body, burst_agendas))
            finally:
                await watch.close()
            rate = burst * LOAD_SHARE / OPERATIONS
            arrivals = max(2, round(rate * seconds))
            context.say(f"latency: {arrivals} agendas at {rate:.0f}/s (half of the throughput)")
            loaded = await _timed("half load", _open_loop(engine, probe, body, rate, arrivals))
    idle_p50, idle_p99 = percentiles(idle)
    load_p50, load_p99 = percentiles(loaded)
    return {
        IDLE_P50: idle_p50,
        IDLE_P99: idle_p99,
        LOAD_P50: load_p50,
        LOAD_P99: load_p99,
        LOAD_RATE: rate,
    }


async def _timed(phase: str, work: Awaitable[T]) -> T:
    """``await work`` within the phase time limit, or a BenchError saying which phase hung."""
    try:
        with anyio.fail_after(_TIMEOUT_S):
            return await work
    except TimeoutError:
        raise BenchError(
            f"latency: the {phase} phase did not finish within {_TIMEOUT_S:.0f} s; "
            "is the engine's worker running?"
        ) from None


async def _idle(engine: Engine, probe: Probe, body: bytes, agendas: int) -> list[float]:
    submitted: dict[str, float] = {}
    for _ in range(agendas):
        started = time.perf_counter()
        submission = await engine.submit(body)
        submitted[submission.agenda_id] = started
        await probe.wait_until_ran([submission.agenda_id])
        await anyio.sleep(IDLE_PAUSE_S)
    return probe.latencies_ms(submitted)


async def _burst(engine: Engine, watch: Connection, body: bytes, agendas: int) -> float:
    """Operations per second of ``agendas`` agendas sent by concurrent submitters, from the
    first submission until all have succeeded."""
    remaining = iter(range(agendas))
    head = int(await watch.fetchval("SELECT popflow.head()"))

    async def submitter() -> None:
        for _ in remaining:
            await engine.submit(body)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for number in range(BURST_SUBMITTERS):
            tg.start_soon(submitter, name=f"bench-latency-submitter-{number}")
    succeeded = 0
    while succeeded < agendas:
        endings = await endings_after(watch, head)
        if endings.failed:
            raise BenchError(f"{endings.failed} agendas failed: the probe's agendas cannot fail")
        head, succeeded = endings.head, succeeded + endings.succeeded
        if succeeded < agendas:
            await engine.storage.events.wait_for_append(head, _WATCH_INTERVAL_S * 10)
            await anyio.sleep(_WATCH_INTERVAL_S)
    return agendas * OPERATIONS / (time.perf_counter() - started)


async def _open_loop(
    engine: Engine, probe: Probe, body: bytes, rate: float, arrivals: int
) -> list[float]:
    """Latencies of ``arrivals`` agendas submitted at ``rate`` per second on a schedule."""
    submitted: dict[str, float] = {}

    async def arrive() -> None:
        started = time.perf_counter()
        submission = await engine.submit(body)
        submitted[submission.agenda_id] = started

    origin = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for number in range(arrivals):
            delay = origin + number / rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            tg.start_soon(arrive, name=f"bench-latency-arrival-{number}")
    await probe.wait_until_ran(list(submitted))
    return probe.latencies_ms(submitted)


LATENCY = Scenario(
    name="latency",
    description=(
        "Latency from submission to the first operation's start: one engine on a fresh "
        "database (default worker settings, `synchronous_commit=on`), agendas of "
        f"{OPERATIONS} independent no-op operations of a probe handler that notes when the "
        "first of an agenda's operations begins to run; each latency runs from just before "
        "`Engine.submit` until then. *Idle*: "
        f"{IDLE_AGENDAS} agendas ({QUICK_IDLE_AGENDAS} with `--quick`) one at a time, each "
        "once the previous one's operations have all run and a "
        f"{IDLE_PAUSE_S * 1000:.0f} ms pause. *At half load*: a burst of {BURST_AGENDAS} "
        f"agendas ({QUICK_BURST_AGENDAS}) from {BURST_SUBMITTERS} concurrent submitters "
        "first measures the engine's throughput (operations/s until every agenda "
        "succeeded); agendas then arrive open-loop for "
        f"{LOAD_SECONDS:.0f} s ({QUICK_LOAD_SECONDS:.0f} s) at half of that rate, in "
        "agendas/s, each submitted by a task started at its scheduled arrival. Percentiles "
        'are `statistics.quantiles(n=100, method="inclusive")` cut points.'
    ),
    measure=measure,
)
