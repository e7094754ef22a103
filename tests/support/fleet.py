"""A fleet of real ``popflow worker`` processes serving one resource pool, and the event log
that judges them.

The farm (:func:`create_farm`) is one resource pool, ``farm``, with two insights routed by
agenda parameter: ``fair`` (RoundRobin, ``lane=fair``) and ``urgent`` (Priority, aging
switched off in practice, ``lane=urgent``), and five customers of the pool. The workload
(:func:`workload`) is skewed: customer ``a`` sends six times what ``e`` sends to the fair
insight. Every agenda is one operation of the built-in ``sample`` handler that sleeps a
little, so the workers run it without any registration.

What happened is read back from the whole event log (:class:`Ledger`): who dispatched
which agenda when, in the global order, and the claims those dispatches came in. A claim
appends its ``agenda.dispatched`` events in one statement, so they are consecutive in the
log and share their worker and their ``recorded_at``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
from anyio.abc import Process

from popflow.bootstrap import Engine
from popflow.engine.directory import Directory
from popflow.engine.visibility import Caller
from popflow.events.store import EventStore, RecordedEvent
from popflow.events.vocabulary import (
    AgendaDispatched,
    AgendaFailed,
    AgendaReclaimed,
    AgendaSubmitted,
    AgendaSucceeded,
    Event,
)
from popflow.projections.documents import CUSTOMER, INSIGHT, RESOURCE_POOL

ROOT = Path(__file__).resolve().parents[2]

FARM = "farm"
FAIR = "fair"
URGENT = "urgent"
FAIR_BACKLOG: Mapping[str, int] = {"a": 72, "b": 48, "c": 30, "d": 18, "e": 12}
"""Agendas each customer sends to the fair insight (customers in pool order)."""
CUSTOMERS = tuple(FAIR_BACKLOG)
URGENT_AGENDAS = 120
WORK_MILLISECONDS = 30
AGING_SECONDS = 3600
"""The urgent insight's priorityAgingSeconds: far beyond a test run, so only the priority
orders its queue."""

_OPERATOR = Caller("fleet-test", frozenset({"*"}), is_super_user=True)
_READY = re.compile(r"worker (\S+) claiming")

E = TypeVar("E", bound=Event)


# --- the farm and its work ------------------------------------------------------------------


async def create_farm(engine: Engine) -> None:
    """The pool, its two insights, then the customers (in the order of FAIR_BACKLOG, which
    is the order round robin gives them turns)."""
    directory = Directory(engine.storage.events, engine.storage.documents, clock=engine.clock)
    await directory.create(RESOURCE_POOL, {"id": FARM, "customerId": FARM}, _OPERATOR)
    lanes: dict[str, dict[str, Any]] = {
        FAIR: {"schedulingAlgorithm": "RoundRobin"},
        URGENT: {"schedulingAlgorithm": "Priority", "priorityAgingSeconds": AGING_SECONDS},
    }
    for lane, scheduling in lanes.items():
        insight = {
            "id": lane,
            "customerId": FARM,
            "title": lane,
            "resourcePoolId": FARM,
            "isGlobal": True,
            "mappers": {"paramMap": [f"lane={lane}"]},
            **scheduling,
        }
        await directory.create(INSIGHT, insight, _OPERATOR)
    for customer in CUSTOMERS:
        body = {"customerId": customer, "title": customer.upper(), "resourcePoolId": FARM}
        await directory.create(CUSTOMER, body, _OPERATOR)


def workload(seed: int = 4) -> list[dict[str, Any]]:
    """The skewed fair backlog and the urgent agendas (priorities -10 to 10, customers in
    turn), in one shuffled submission order."""
    agendas = [
        _agenda(customer, {"lane": FAIR}, f"{customer}-fair-{n}")
        for customer, count in FAIR_BACKLOG.items()
        for n in range(count)
    ]
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    priorities = [n % 21 - 10 for n in range(URGENT_AGENDAS)]
    rng.shuffle(priorities)
    agendas += [
        _agenda(CUSTOMERS[n % len(CUSTOMERS)], {"lane": URGENT, "priority": p}, f"urgent-{n}")
        for n, p in enumerate(priorities)
    ]
    rng.shuffle(agendas)
    return agendas


async def submit_workload(engine: Engine, agendas: Sequence[dict[str, Any]]) -> None:
    """Submit one after the other, through the engine (validation and routing)."""
    for agenda in agendas:
        await engine.submit(agenda)


def _agenda(customer: str, params: dict[str, Any], title: str) -> dict[str, Any]:
    action = {
        "action": "log",
        "paramsMap": {"sleepMilliseconds": WORK_MILLISECONDS, "logMessage": title},
    }
    payload = {"actions": [action], "resultPayload": {"title": title}}
    return {
        "customerId": customer,
        "title": title,
        "params": params,
        "operations": [{"name": "work", "type": "sample", "payload": payload}],
    }


# --- the workers ----------------------------------------------------------------------------


@dataclasses.dataclass
class WorkerProcess:
    """One ``popflow worker`` process; its stderr goes to ``log``."""

    process: Process
    log: Path
    worker_id: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def worker_command(dsn: str, scope: Sequence[str], concurrency: int = 4) -> list[str]:
    return [
        sys.executable,
        "-m",
        "popflow",
        "worker",
        "--dsn",
        dsn,
        *scope,
        "--concurrency",
        str(concurrency),
        "--lease-timeout",
        "3",
        "--grace",
        "2",
    ]


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPFLOW_")}
    return {**env, "POPFLOW_HOME": str(home), "NO_COLOR": "1"}


@asynccontextmanager
async def running_workers(
    dsn: str, home: Path, scopes: Sequence[Sequence[str]]
) -> AsyncIterator[list[WorkerProcess]]:
    """One worker per scope (its --resource-pool / --insight arguments), started at once;
    yields them once each has said it is claiming. Any still running at the end is killed."""
    workers: list[WorkerProcess] = []
    try:
        for n, scope in enumerate(scopes):
            log = home / f"worker-{n}.stderr"
            with log.open("wb") as stderr:
                process = await anyio.open_process(
                    worker_command(dsn, scope),
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    cwd=ROOT,
                    env=_environment(home),
                )
            workers.append(WorkerProcess(process, log))
        for worker in workers:
            worker.worker_id = await _ready(worker)
        yield workers
    finally:
        with anyio.CancelScope(shield=True):
            for worker in workers:
                if worker.process.returncode is None:
                    worker.process.kill()
                await worker.process.wait()
                await worker.process.aclose()


async def _ready(worker: WorkerProcess, timeout: float = 60) -> str:
    """The worker's id, from the line it prints when it starts claiming."""
    with anyio.move_on_after(timeout):
        while True:
            if match := _READY.search(worker.output()):
                return match.group(1)
            if worker.process.returncode is not None:
                break
            await anyio.sleep(0.05)
    raise AssertionError(
        f"popflow worker (pid {worker.pid}) did not start claiming "
        f"(exit status {worker.process.returncode}):\n{worker.output()}"
    )


async def stop(workers: Sequence[WorkerProcess], timeout: float = 30) -> list[int]:
    """SIGTERM to each, then their exit statuses (within ``timeout``)."""
    for worker in workers:
        worker.process.send_signal(signal.SIGTERM)
    with anyio.fail_after(timeout):
        return [await worker.process.wait() for worker in workers]


async def kill_while_holding(
    worker: WorkerProcess, ledger: Ledger, timeout: float = 30
) -> set[str]:
    """SIGKILL ``worker`` at a moment it holds agendas, and return those. It is frozen
    (SIGSTOP) while the log is read, after a pause that lets what it had sent land; if it
    holds nothing, it goes on (SIGCONT) and is caught again a little later."""
    with anyio.fail_after(timeout):
        while True:
            worker.process.send_signal(signal.SIGSTOP)
            await anyio.sleep(0.2)
            await ledger.catch_up()
            if held := ledger.held_by(worker.worker_id):
                worker.process.kill()
                await worker.process.wait()
                return held
            worker.process.send_signal(signal.SIGCONT)
            await anyio.sleep(0.1)


def describe(workers: Sequence[WorkerProcess]) -> str:
    """The workers' exit statuses and the end of their stderr, for failure messages."""
    return "\n".join(
        f"worker {w.worker_id or '?'} (pid {w.pid}, exit {w.process.returncode}):\n"
        + "\n".join(w.output().splitlines()[-15:])
        for w in workers
    )


# --- the event log --------------------------------------------------------------------------


class Ledger:
    """The whole event log, read in global order, and what it says about the agendas."""

    def __init__(self, events: EventStore) -> None:
        self._events = events
        self.log: list[RecordedEvent] = []
        self.submitted: dict[str, AgendaSubmitted] = {}
        """Every agenda's submission, by stream."""

    async def catch_up(self) -> None:
        while batch := await self._events.read_all(
            after=self.log[-1].position if self.log else 0, limit=1000
        ):
            self.log += batch
            for recorded in batch:
                if isinstance(recorded.event, AgendaSubmitted):
                    self.submitted[recorded.stream_id] = recorded.event

    def of(self, kind: type[E]) -> Iterator[tuple[RecordedEvent, E]]:
        """The events of one type, in global order, with their records."""
        for recorded in self.log:
            if isinstance(recorded.event, kind):
                yield recorded, recorded.event

    def completions(self) -> Counter[str]:
        """How many times each agenda completed (succeeded or failed)."""
        return Counter(r.stream_id for r in self.log if _completes(r.event))

    def failed(self) -> list[str]:
        return [r.stream_id for r, _ in self.of(AgendaFailed)]

    def insight(self, stream_id: str) -> str:
        return self.submitted[stream_id].insight.insight_id

    def customer(self, stream_id: str) -> str:
        return self.submitted[stream_id].agenda.customer_id

    def priority(self, stream_id: str) -> int:
        return int(self.submitted[stream_id].agenda.params.get("priority", 0))

    def first_dispatches(self, insight: str) -> list[str]:
        """The insight's agendas in the order they were first dispatched."""
        seen: dict[str, None] = {}
        for recorded, _ in self.of(AgendaDispatched):
            if self.insight(recorded.stream_id) == insight:
                seen.setdefault(recorded.stream_id)
        return list(seen)

    def claims(self) -> list[list[RecordedEvent]]:
        """The dispatches grouped by claim: consecutive in the log, same worker, same
        ``recorded_at`` (one append statement)."""
        claims: list[list[RecordedEvent]] = []
        key: tuple[str, Any] | None = None
        for recorded, event in self.of(AgendaDispatched):
            if (event.worker_id, recorded.recorded_at) != key or not _follows(claims, recorded):
                claims.append([])
                key = (event.worker_id, recorded.recorded_at)
            claims[-1].append(recorded)
        return claims

    def held_by(self, worker_id: str) -> set[str]:
        """The agendas the worker holds now."""
        now: dict[str, str] = {}
        for holders in self._holders():
            now = holders
        return {stream for stream, holder in now.items() if holder == worker_id}

    def most_held(self) -> Counter[str]:
        """The most agendas each worker held at once."""
        most: Counter[str] = Counter()
        for holders in self._holders():
            for worker, held in Counter(holders.values()).items():
                most[worker] = max(most[worker], held)
        return most

    def _holders(self) -> Iterator[dict[str, str]]:
        """After each event, the holder of every held agenda: the worker it was dispatched
        to, until it completes or is reclaimed."""
        holders: dict[str, str] = {}
        for recorded in self.log:
            if isinstance(recorded.event, AgendaDispatched):
                holders[recorded.stream_id] = recorded.event.worker_id
            elif isinstance(recorded.event, AgendaReclaimed) or _completes(recorded.event):
                holders.pop(recorded.stream_id, None)
            yield holders

    def stream(self, stream_id: str) -> list[Event]:
        return [r.event for r in self.log if r.stream_id == stream_id]

    def dispatchers(self) -> Counter[str]:
        """Dispatches per worker id."""
        return Counter(event.worker_id for _, event in self.of(AgendaDispatched))


def _completes(event: Event) -> bool:
    return isinstance(event, AgendaSucceeded | AgendaFailed)


def _follows(claims: list[list[RecordedEvent]], recorded: RecordedEvent) -> bool:
    return bool(claims) and claims[-1][-1].position == recorded.position - 1


async def wait_for_completion(
    ledger: Ledger, workers: Sequence[WorkerProcess], expected: int, timeout: float = 90
) -> None:
    """Until ``expected`` agendas have completed; fails naming what is missing (and how
    the workers are doing) after ``timeout`` seconds, or as soon as an agenda fails."""
    with anyio.move_on_after(timeout):
        while True:
            await ledger.catch_up()
            assert not ledger.failed(), f"agendas failed: {ledger.failed()}"
            if len(ledger.completions()) >= expected:
                return
            await anyio.sleep(0.1)
    raise AssertionError(
        f"after {timeout} s, {len(ledger.completions())} of {expected} agendas completed; "
        f"missing: {missing(ledger)}\n{describe(workers)}"
    )


def missing(ledger: Ledger, shown: int = 10) -> str:
    """The agendas that did not complete, each with its last event type."""
    done = ledger.completions()
    last: dict[str, str] = {}
    for recorded in ledger.log:
        if recorded.stream_id in ledger.submitted:
            last[recorded.stream_id] = recorded.type
    waiting = [f"{s} ({last[s]})" for s in ledger.submitted if s not in done]
    more = " ..." if len(waiting) > shown else ""
    return f"{len(waiting)}: " + ", ".join(waiting[:shown]) + more
