"""``popflow queues`` run as a user runs it: a real process reading a real database."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from popflow.bootstrap import open_engine
from popflow.engine.directory import Directory
from popflow.projections.documents import INSIGHT
from popflow.settings import Settings
from tests.e2e.test_cli import ROOT, UNREACHABLE_DSN, Result, command, environment
from tests.e2e.test_worker_cli import OPERATOR, submit, submitting_engine

pytestmark = pytest.mark.postgres


async def queues(*args: str, home: Path) -> Result:
    done = await anyio.run_process(
        command(["queues", *args]), env=environment(home), cwd=ROOT, check=False
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


async def queued_work(dsn: str) -> None:
    """Two agendas in ``render`` (Priority, queue size 3), none in ``audio`` or ``edit``,
    and an Insight ``idle`` of no pool. Nothing runs them."""
    async with submitting_engine(dsn) as engine:
        directory = Directory(engine.storage.events, engine.storage.documents, clock=engine.clock)
        changes = {"schedulingAlgorithm": "Priority", "queueSize": 3}
        await directory.update(INSIGHT, "render", changes, OPERATOR)
        await submit(engine, "acme", "render")
        await submit(engine, "acme", "render")
        idle = {"id": "idle", "customerId": "farm", "title": "Idle"}
        await directory.create(INSIGHT, idle, OPERATOR)


async def test_json_lists_every_insight_defined_or_queued(
    database_dsn: str, tmp_path: Path
) -> None:
    await queued_work(database_dsn)
    result = await queues("--dsn", database_dsn, "--json", home=tmp_path)
    assert result.status == 0, result.stderr
    rows = {row["insightId"]: row for row in result.json()}
    assert sorted(rows) == ["audio", "edit", "idle", "render"]
    render = rows.pop("render")
    since = datetime.fromisoformat(render.pop("oldestReadySince"))
    assert since.utcoffset() is not None
    assert render.pop("oldestWaitSeconds") > 0
    assert render == {
        "insightId": "render",
        "resourcePoolId": "farm",
        "title": "Render",
        "schedulingAlgorithm": "Priority",
        "queueSize": 3,
        "ready": 2,
        "dispatched": 0,
        "running": 0,
        "pendingCustomerIds": [],
    }
    assert rows["audio"] == nothing_queued("audio", "farm", "Audio")
    assert rows["idle"] == nothing_queued("idle", None, "Idle")


def nothing_queued(insight: str, pool: str | None, title: str | None) -> dict[str, Any]:
    return {
        "insightId": insight,
        "resourcePoolId": pool,
        "title": title,
        "schedulingAlgorithm": "FirstInFirstOut",
        "queueSize": 0,
        "ready": 0,
        "dispatched": 0,
        "running": 0,
        "oldestReadySince": None,
        "oldestWaitSeconds": 0.0,
        "pendingCustomerIds": [],
    }


async def test_the_table_shows_sizes_and_waits(database_dsn: str, tmp_path: Path) -> None:
    await queued_work(database_dsn)
    result = await queues("--dsn", database_dsn, home=tmp_path)
    assert result.status == 0, result.stderr
    heading, *lines = result.stdout.splitlines()
    assert heading.split() == [
        "insight",
        "resource",
        "pool",
        "algorithm",
        "queue",
        "size",
        "ready",
        "dispatched",
        "running",
        "oldest",
        "wait",
    ]
    rows = {line.split()[0]: line.split() for line in lines}
    assert sorted(rows) == ["audio", "edit", "idle", "render"]
    assert rows["render"][:7] == ["render", "farm", "Priority", "3", "2", "0", "0"]
    assert rows["render"][7].endswith("s")  # a duration such as 0.4s
    assert rows["idle"] == ["idle", "-", "FirstInFirstOut", "unbounded", "0", "0", "0", "-"]


async def test_named_insights_only_with_zeros_for_unknown_ones(
    database_dsn: str, tmp_path: Path
) -> None:
    await queued_work(database_dsn)
    result = await queues(
        "--dsn", database_dsn, "--json", "--insight", "ghost", "--insight", "render", home=tmp_path
    )
    assert result.status == 0, result.stderr
    rows = result.json()
    assert [row["insightId"] for row in rows] == ["ghost", "render"]
    assert rows[0] == nothing_queued("ghost", None, None)
    assert rows[1]["ready"] == 2


async def test_the_default_insight_shows_while_it_has_agendas(
    database_dsn: str, tmp_path: Path
) -> None:
    async with open_engine(Settings(dsn=database_dsn), claim=False) as engine:
        await engine.submit({"customerId": "acme", "operations": [{"name": "a", "type": "sample"}]})
    result = await queues("--dsn", database_dsn, "--json", home=tmp_path)
    assert result.status == 0, result.stderr
    [row] = result.json()
    assert (row["insightId"], row["resourcePoolId"], row["ready"]) == ("default", "default", 1)
    assert row["oldestWaitSeconds"] > 0


async def test_an_unreachable_database_is_an_infrastructure_error(tmp_path: Path) -> None:
    result = await queues("--dsn", UNREACHABLE_DSN, home=tmp_path)
    assert result.status == 3
    assert "cannot connect to PostgreSQL" in result.stderr
