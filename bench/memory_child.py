"""The engine of the memory scenario, in a process of its own: ``python -m bench.memory_child
AGENDAS`` with ``POPFLOW_DSN`` naming a fresh database.

It opens one engine whose worker may hold ``AGENDAS`` agendas and all their operations at
once, warms it up with :data:`WARM_AGENDAS` agendas of no-op ``sample`` operations run to
completion, and reads its resident memory (``VmRSS`` of ``/proc/self/status``, after a
full garbage collection). It then submits ``AGENDAS`` agendas of :data:`OPERATIONS`
operations whose handler blocks until the process ends, waits until every one of those
operations has started, and reads the resident memory again. It prints one line on stdout,
a JSON object: ``agendas``, ``baseline_kb``, ``in_flight_kb`` and ``seconds`` (the time
to get every agenda in flight). On leaving, the worker hands the agendas back at once.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec

from popflow.adapters.memory import HandlerContext
from popflow.bootstrap import Engine, open_engine
from popflow.engine.worker import WorkerSettings
from popflow.settings import Settings

HOLD_TYPE = "benchHold"
"""The operation type of the measured agendas: a handler that blocks until released."""
OPERATIONS = 10
WARM_AGENDAS = 200
SUBMITTERS = 16
CLAIM_BATCH = 200
TIMEOUT_S = 900.0


def agenda_json(operation_type: str) -> bytes:
    document: dict[str, Any] = {
        "customerId": "bench",
        "operations": [
            {"name": f"op-{n}", "type": operation_type, "payload": {}}
            for n in range(1, OPERATIONS + 1)
        ],
    }
    return msgspec.json.encode(document)


def resident_kb() -> int:
    """This process's resident set size, in KiB, after a full garbage collection."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmRSS line: resident memory is unknown")


class Hold:
    """Handler of :data:`HOLD_TYPE`: counts the operations started, then blocks."""

    def __init__(self, expected: int) -> None:
        self.started = 0
        self.all_started = anyio.Event()
        self._expected = expected
        self._release = anyio.Event()

    async def handler(self, _context: HandlerContext) -> dict[str, Any]:
        self.started += 1
        if self.started >= self._expected:
            self.all_started.set()
        await self._release.wait()
        return {}


def worker_settings(agendas: int) -> WorkerSettings:
    """Room for every agenda at once. Under load a worker claims only once a quarter batch
    fits, so ``max_agendas`` exceeds ``agendas`` by a batch: the last ones are claimed too."""
    return WorkerSettings(
        max_agendas=agendas + CLAIM_BATCH,
        max_operations=agendas * OPERATIONS,
        claim_batch=CLAIM_BATCH,
        shutdown_grace=0.0,
    )


async def submit_all(engine: Engine, body: bytes, agendas: int) -> list[str]:
    """Submit ``agendas`` copies of ``body`` from concurrent submitters; their ids."""
    ids: list[str] = []
    remaining = iter(range(agendas))

    async def submitter() -> None:
        for _ in remaining:
            submission = await engine.submit(body)
            ids.append(submission.agenda_id)

    async with anyio.create_task_group() as tg:
        for number in range(SUBMITTERS):
            tg.start_soon(submitter, name=f"bench-memory-submitter-{number}")
    return ids


async def main(agendas: int) -> None:
    """Measure, print the figures' JSON line, then stop the engine."""
    settings = Settings.from_environment(worker=worker_settings(agendas))
    hold = Hold(agendas * OPERATIONS)
    async with open_engine(settings, handlers={HOLD_TYPE: hold.handler}) as engine:
        with anyio.fail_after(TIMEOUT_S):
            warm = await submit_all(engine, agenda_json("sample"), WARM_AGENDAS)
            for agenda_id in warm:
                await engine.wait(agenda_id)
            baseline = resident_kb()
            started = time.perf_counter()
            await submit_all(engine, agenda_json(HOLD_TYPE), agendas)
            await hold.all_started.wait()
            seconds = time.perf_counter() - started
            in_flight = resident_kb()
        result = {
            "agendas": agendas,
            "baseline_kb": baseline,
            "in_flight_kb": in_flight,
            "seconds": seconds,
        }
        print(json.dumps(result), flush=True)


def run(argv: list[str]) -> None:
    usage = "usage: POPFLOW_DSN=postgresql://... python -m bench.memory_child AGENDAS"
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) < 1:
        raise SystemExit(usage)
    if not os.environ.get("POPFLOW_DSN", "").startswith(("postgresql://", "postgres://")):
        raise SystemExit(f"POPFLOW_DSN must name the fresh database to use; {usage}")
    anyio.run(main, int(argv[0]))


if __name__ == "__main__":
    run(sys.argv[1:])
