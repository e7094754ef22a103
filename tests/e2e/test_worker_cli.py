"""``popflow worker`` run as a user runs it: a real process claiming from a real database.

The test process configures the directory and submits agendas with an engine that claims
nothing (as the API would), then starts ``popflow worker`` and judges it by the agendas'
histories, its stderr and its exit status.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from popflow.bootstrap import Engine, open_engine
from popflow.engine.directory import Directory
from popflow.engine.router import InsightRouter
from popflow.engine.service import AgendaService
from popflow.engine.visibility import Caller
from popflow.events.vocabulary import AgendaDispatched
from popflow.projections.documents import CUSTOMER, INSIGHT, RESOURCE_POOL
from popflow.settings import Settings
from tests.e2e.test_cli import ROOT, command, environment

pytestmark = pytest.mark.postgres

READY = re.compile(r"^popflow: worker (\S+) claiming (.+); Ctrl-C stops$")
OPERATOR = Caller("cli-test", frozenset(), is_super_user=True)


# --- a directory and agendas, as the API would make them -------------------------------------


@asynccontextmanager
async def submitting_engine(dsn: str) -> AsyncIterator[Engine]:
    """An engine that runs nothing, with two pools: ``farm`` (insights ``render`` and
    ``audio``, chosen by operation name; customer acme) and ``studio`` (insight ``edit``;
    customer globex)."""
    async with open_engine(Settings(dsn=dsn, poll_interval=0.2), claim=False) as engine:
        directory = Directory(engine.storage.events, engine.storage.documents, clock=engine.clock)
        for pool, customer, insights in (
            ("farm", "acme", ("render", "audio")),
            ("studio", "globex", ("edit",)),
        ):
            await directory.create(RESOURCE_POOL, {"id": pool, "customerId": pool}, OPERATOR)
            for insight in insights:
                await directory.create(INSIGHT, insight_body(insight, pool, customer), OPERATOR)
            body = {"customerId": customer, "title": customer, "resourcePoolId": pool}
            await directory.create(CUSTOMER, body, OPERATOR)
        yield engine


def insight_body(insight: str, pool: str, customer: str, **fields: Any) -> dict[str, Any]:
    """An insight of ``pool`` owned by the pool, taking ``customer``'s operations named
    after it."""
    return {
        "id": insight,
        "customerId": pool,
        "title": insight.title(),
        "resourcePoolId": pool,
        "allowedCustomerIds": [customer],
        "mappers": {"operationName": [insight]},
        **fields,
    }


async def submit(engine: Engine, customer: str, operation: str) -> str:
    """Submit a one-operation agenda of the built-in ``sample`` type, routed as the API
    routes it; returns its id."""
    service = AgendaService(
        engine.storage.events,
        append=engine.committer.append,
        known_type=engine.operations.knows,
        route=InsightRouter(engine.storage.documents),
    )
    agenda = {
        "customerId": customer,
        "operations": [
            {"name": operation, "type": "sample", "payload": {"resultPayload": {"n": 1}}}
        ],
    }
    return (await service.submit(engine.parse(agenda))).agenda_id


async def dispatched_to(engine: Engine, agenda_id: str) -> list[str]:
    return [
        e.event.worker_id
        for e in await engine.history(agenda_id)
        if isinstance(e.event, AgendaDispatched)
    ]


# --- the worker process ----------------------------------------------------------------------


@dataclasses.dataclass
class WorkerProcess:
    """A running ``popflow worker`` and its stderr, line by line."""

    process: Process
    stderr: BufferedByteReceiveStream

    async def line(self) -> str:
        """The next line of stderr ('' at its end)."""
        try:
            return (await self.stderr.receive_until(b"\n", 1 << 16)).decode()
        except (anyio.EndOfStream, anyio.IncompleteRead):
            return ""

    async def terminated(self) -> tuple[int, str]:
        """SIGTERM the worker; its exit status and the rest of its stderr."""
        self.process.send_signal(signal.SIGTERM)
        rest = []
        with anyio.fail_after(60):
            while line := await self.line():
                rest.append(line)
            return await self.process.wait(), "\n".join(rest)


@asynccontextmanager
async def running_worker(
    dsn: str, home: Path, *args: str
) -> AsyncIterator[tuple[WorkerProcess, re.Match[str]]]:
    """``popflow worker --dsn DSN ARGS``, once it says it is claiming (killed if still
    running at the end)."""
    async with await anyio.open_process(
        command(["worker", "--dsn", dsn, *args]),
        stdout=subprocess.DEVNULL,
        env=environment(home),
        cwd=ROOT,
    ) as process:
        assert process.stderr is not None
        worker = WorkerProcess(process, BufferedByteReceiveStream(process.stderr))
        try:
            seen: list[str] = []
            with anyio.fail_after(60):
                while not (ready := READY.match((line := await worker.line()).rstrip("\n"))):
                    seen.append(line)
                    if not line:
                        pytest.fail(f"popflow worker did not start: {''.join(seen)}")
            yield worker, ready
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.move_on_after(10, shield=True):
                await process.wait()


# --- tests -----------------------------------------------------------------------------------


async def test_a_worker_runs_its_insight_only_and_stops_on_sigterm(
    database_dsn: str, tmp_path: Path
) -> None:
    async with submitting_engine(database_dsn) as engine:
        render = await submit(engine, "acme", "render")
        audio = await submit(engine, "acme", "audio")
        async with running_worker(
            database_dsn, tmp_path, "--insight", "render", "--lease-timeout", "5"
        ) as (process, ready):
            assert ready.group(2) == "insight render"
            progress = await engine.wait(render, timeout=60)
            assert progress.processing_state_message == "succeeded"
            status, stderr = await process.terminated()
        assert status == 0, stderr
        assert f"worker {ready.group(1)} stopped; 1 agenda ended here" in stderr
        assert await dispatched_to(engine, render) == [ready.group(1)]
        # Both were ready before the worker started: the other insight's agenda was left.
        assert [e.type for e in await engine.history(audio)] == ["agenda.submitted"]
        [queue] = await engine.queues(["audio"])
        assert queue.ready == 1


async def test_a_worker_of_a_resource_pool_leaves_other_pools_alone(
    database_dsn: str, tmp_path: Path
) -> None:
    async with submitting_engine(database_dsn) as engine:
        farm = await submit(engine, "acme", "render")
        studio = await submit(engine, "globex", "edit")
        async with running_worker(
            database_dsn, tmp_path, "--resource-pool", "studio", "--concurrency", "1"
        ) as (process, ready):
            assert ready.group(2) == "every insight of resource pool studio"
            progress = await engine.wait(studio, timeout=60)
            assert progress.processing_state_message == "succeeded"
            status, stderr = await process.terminated()
        assert status == 0, stderr
        assert await dispatched_to(engine, studio) == [ready.group(1)]
        assert await dispatched_to(engine, farm) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--concurrency", "0"], "argument --concurrency: expected 1 or more, got 0"),
        (["--concurrency", "many"], "argument --concurrency: expected a whole number"),
        (["--lease-timeout", "0"], "argument --lease-timeout: expected a positive number"),
        (["--grace", "-1"], "argument --grace: expected a number of seconds"),
        (["--insight", " "], "argument --insight: expected a non-empty value"),
        (["--dsn", "memory://"], "memory:// holds nothing to claim"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    options: list[str], message: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        command(["worker", *options]),
        capture_output=True,
        text=True,
        env=environment(tmp_path),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was started
