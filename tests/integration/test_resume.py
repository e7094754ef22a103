"""Invariant: a worker that dies loses its leases, and its agendas resume elsewhere from the
point of failure. The first worker is a real process killed with SIGKILL mid-operation."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from popflow.adapters.memory import HandlerContext
from popflow.bootstrap import open_engine, open_storage
from popflow.engine.agenda import agenda_from_mapping
from popflow.engine.executor import ExecutorSettings
from popflow.engine.service import AgendaService
from popflow.engine.worker import WorkerSettings
from popflow.events.vocabulary import (
    AgendaReclaimed,
    OperationProgressed,
    OperationsGenerated,
    OperationStarted,
    agenda_stream,
)
from popflow.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

AGENDA = {
    "customerId": "acme",
    "operations": [
        {"name": "first", "type": "fast"},
        {
            "name": "expand",
            "type": "updateAgenda",
            "payload": {"operations": [{"name": "extra", "type": "fast"}]},
            "params": {"dependsOn": "first"},
        },
        {"name": "second", "type": "slow", "params": {"dependsOn": "expand"}},
        {"name": "third", "type": "fast", "payload": "@<second.out>"},
    ],
}


async def test_an_agenda_resumes_after_its_worker_is_killed(database_dsn: str) -> None:
    command = [sys.executable, "-m", "tests.support.worker_process", database_dsn]
    async with await anyio.open_process(command, cwd=ROOT, stderr=subprocess.DEVNULL) as process:
        try:
            assert process.stdout is not None
            with anyio.fail_after(20):
                assert (await process.stdout.receive()).strip() == b"ready"
            agenda_id = await _submit_and_wait_for_progress(database_dsn)
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()

    calls: Counter[str] = Counter()
    priors: list[Any] = []

    async def fast(ctx: HandlerContext) -> Any:
        calls[ctx.operation.name] += 1
        return {"done": ctx.operation.name}

    async def slow(ctx: HandlerContext) -> Any:
        calls[ctx.operation.name] += 1
        priors.append(ctx.prior_progress)
        return {"resumed": True}

    settings = Settings(
        dsn=database_dsn,
        poll_interval=0.1,
        reclaim_interval=0.2,
        worker=WorkerSettings(
            poll_interval=0.1,
            heartbeat_interval=0.2,
            lease_timeout=1.0,
            executor=ExecutorSettings(progress_interval=0.05),
        ),
    )
    async with open_engine(settings, handlers={"fast": fast, "slow": slow}) as engine:
        progress = await engine.wait(agenda_id, timeout=20)
        history = [e.event for e in await engine.history(agenda_id)]

    assert progress.processing_state_message == "succeeded"
    assert calls == Counter({"second": 1, "third": 1})  # succeeded operations do not run again
    started = [
        (e.operation, e.attempt, e.dispatch) for e in history if isinstance(e, OperationStarted)
    ]
    assert started == [
        ("first", 1, 1),
        ("expand", 1, 1),
        ("second", 1, 1),
        ("extra", 1, 1),
        ("second", 1, 2),
        ("third", 1, 2),
    ]
    assert sum(isinstance(e, OperationsGenerated) for e in history) == 1
    [reclaim] = [e for e in history if isinstance(e, AgendaReclaimed)]
    assert "heartbeat" in reclaim.reason
    [prior] = priors
    assert prior["params"]["JobId"] == "job-from-the-first-worker"
    assert prior["percentComplete"] == 40


async def _submit_and_wait_for_progress(dsn: str) -> str:
    async with open_storage(Settings(dsn=dsn)) as storage:
        service = AgendaService(storage.events)
        submission = await service.submit(agenda_from_mapping(AGENDA, max_bytes=1 << 20))
        stream = agenda_stream(submission.agenda_id)
        with anyio.fail_after(15):
            while not any(
                isinstance(e.event, OperationProgressed)
                for e in await storage.events.read_stream(stream)
            ):
                await anyio.sleep(0.05)
        return submission.agenda_id
